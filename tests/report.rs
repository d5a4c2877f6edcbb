//! `bench/report.py`, the charts `make bench` writes from one run's comparisons:
//! a results file in, bench/report.md and one SVG per comparison out,
//! each SVG well-formed for an HTML tokenizer and carrying the ratio, the budget's
//! verdict, the date and the machine; a bad line is an error naming file:line.

mod common;
use common::*;
use std::fs;
use std::process::Command;

fn report(results: &std::path::Path, out: &std::path::Path) -> (i32, String, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/report.py");
    let mut c = Command::new("python3");
    c.arg(script).arg(results).arg(out);
    run_to_end(c)
}

#[test]
fn the_report_charts_each_comparison_with_its_ratio_date_and_machine() {
    let sb = Sandbox::new("report");
    let results = sb.path("results.tsv");
    fs::write(
        &results,
        "core\tdaemon CPU per check run\tus\t61.2\tmonit 5.33\t258\tlower\t<= 0.25\n\
         collect\tno check <crd events>\tmessages/s\t41700\tmosquitto_sub | xargs\t65000\thigher\t>= 0.80\n",
    )
    .unwrap();
    let out = sb.path("out/report.md");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (code, stdout, err) = report(&results, &out);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("2 charts"), "{stdout}");
    let md = fs::read_to_string(&out).unwrap();
    assert!(
        md.contains("| core | daemon CPU per check run | 61.2 us | monit 5.33: 258 us | 0.24 | <= 0.25 met |"),
        "{md}"
    );
    assert!(
        md.contains("| mosquitto_sub \\| xargs: 65,000 messages/s | 0.64 | >= 0.80 NOT met |"),
        "a pipe escaped in its cell: {md}"
    );
    assert!(
        md.contains("![daemon CPU per check run](charts/01-core.svg)"),
        "{md}"
    );
    let year = md.split("one run: ").nth(1).unwrap();
    assert!(
        year.starts_with("20") && year.contains(" UTC, ") && year.contains("CPUs, Linux"),
        "{md}"
    );
    for (name, want) in [
        (
            "01-core.svg",
            "crd / monit 5.33 = 0.24 (budget &lt;= 0.25: met; lower is better)",
        ),
        ("02-collect.svg", "no check &lt;crd events&gt;"),
    ] {
        let svg = fs::read_to_string(sb.path(&format!("out/charts/{name}"))).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.contains(want), "{want} in {svg}");
        assert!(
            svg.contains(" UTC; ") && svg.contains("CPUs"),
            "date and machine: {svg}"
        );
        let rects = svg.matches("<rect ").count();
        assert_eq!(rects, 3, "background and two bars: {svg}");
        for t in html5gum::Tokenizer::new(&svg) {
            assert!(!matches!(t.unwrap(), html5gum::Token::Error(_)), "{svg}");
        }
    }
    // A bad line names the file and line.
    fs::write(&results, "core\tonly three\tfields\n").unwrap();
    let (code, _, err) = report(&results, &out);
    assert_ne!(code, 0);
    assert!(
        err.contains("results.tsv:1: want 8 tab-separated fields, got 3"),
        "{err}"
    );
}
