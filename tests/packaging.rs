//! Tests of the packaging in `cross/`: the OpenWrt procd init script under stubbed
//! procd and UCI functions, the sysvinit script driving the real daemon, the `.ipk`
//! layout, and `make install`.

mod common;
use common::*;
use crd::core::config::{KEYS, KeyScope, parse_config};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> String {
    std::env::var("CRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crd").to_string())
}

fn sh(script: &str, envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(script).current_dir(root());
    for (k, v) in envs {
        c.env(k, v);
    }
    run_to_end(c)
}

/// Runs `calls` after sourcing the stubs and the procd init script.
fn procd(sb: &Sandbox, uci: &str, calls: &str) -> (i32, String, String) {
    let script = format!(
        ". tests/init/procd-stubs.sh\n. cross/openwrt/crd/files/crd.init\nCONF={conf}\n{uci}\n{calls}",
        conf = sb.path("var/etc/crd.conf").display()
    );
    sh(
        &script,
        &[("PROCD_LOG", sb.path("procd.log").to_str().unwrap())],
    )
}

#[test]
fn procd_script_translates_uci_and_starts_crd_with_respawn() {
    let sb = Sandbox::new("procd");
    let uci = format!(
        "UCI_main_enabled=1\nUCI_main_node=edge-7\nUCI_main_interval=15s\nUCI_main_modules_dir={}\n\
         UCI_main_max_parallel=4\nUCI_main_spool_size=2M\nUCI_main_spool_sync_interval=5s\n\
         UCI_SECTIONS_module='cfg01 disk'\n\
         UCI_cfg01_name=WanDown\nUCI_cfg01_trigger_after=5\nUCI_disk_cooldown=1h\nUCI_disk_enabled=0",
        sb.path("modules").display()
    );
    let (code, out, err) = procd(&sb, &uci, "start_service\nservice_triggers");
    assert_eq!(code, 0, "{out}{err}");
    let conf = sb.read("var/etc/crd.conf");
    let body: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        vec![
            "node = \"edge-7\"",
            &format!("modules_dir = \"{}\"", sb.path("modules").display()),
            "max_parallel = \"4\"",
            "spool_size = \"2M\"",
            "spool_sync_interval = \"5s\"",
            "interval = \"15s\"",
            "[module WanDown]",
            "trigger_after = \"5\"",
            "[module disk]",
            "cooldown = \"1h\"",
            "enabled = \"0\"",
        ]
    );
    let log = sb.read("procd.log");
    let conf_path = sb.path("var/etc/crd.conf");
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec![
            "open_instance ",
            &format!("set_param command /usr/sbin/crd -c {}", conf_path.display()),
            "set_param respawn 3600 5 0",
            "set_param stdout 1",
            "set_param stderr 1",
            "close_instance",
            "reload_trigger crd",
        ]
    );
    // The generated file is a valid crd.conf for the real binary.
    let (code, out, err) = run_to_end(crd_command(&conf_path, &["--check-config"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn procd_reload_regenerates_and_sends_sighup_and_disabled_starts_nothing() {
    let sb = Sandbox::new("procd-reload");
    let (code, _, err) = procd(&sb, "UCI_main_interval=5m", "reload_service");
    assert_eq!(code, 0, "{err}");
    assert!(sb.read("var/etc/crd.conf").contains("interval = \"5m\""));
    assert_eq!(sb.read("procd.log"), "send_signal crd * HUP\n");

    let sb = Sandbox::new("procd-off");
    let (code, _, err) = procd(&sb, "UCI_main_enabled=0", "start_service");
    assert_eq!(code, 0, "{err}");
    assert!(!sb.exists("procd.log"), "no instance when disabled");
}

/// The keys UCI may set, section by section, as the init script lists them.
fn init_script_keys(list: &str) -> Vec<String> {
    let (code, out, err) = sh(
        &format!(". cross/openwrt/crd/files/crd.init\nprintf '%s\\n' ${list}"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
    keys.sort();
    keys
}

/// The keys a router's crd (no collector) takes in 'main' (crd.conf's global
/// keys) and in a `config module` (a `[module NAME]` section), from the parser's
/// own table. 'main''s `enabled` is the service's switch, not every module's
/// default.
fn router_keys(module: bool) -> Vec<String> {
    let mut keys: Vec<String> = KEYS
        .iter()
        .filter(|k| k.router())
        .filter(|k| match k.scope {
            KeyScope::Global => !module,
            KeyScope::Module => module,
            KeyScope::Both => module || k.name != "enabled",
        })
        .map(|k| k.name.to_string())
        .collect();
    keys.sort();
    keys
}

/// UCI covers every key a router's crd takes, and only those: a key added to
/// the parser (and so to `KEYS`) and not to the init script fails here, as does
/// a collector's key in the router's lists.
#[test]
fn procd_script_lists_every_key_a_routers_crd_takes() {
    let mut differ = Vec::new();
    for (list, module) in [("GLOBAL_KEYS", false), ("MODULE_KEYS", true)] {
        let script = init_script_keys(list);
        let table = router_keys(module);
        let missing: Vec<_> = table.iter().filter(|k| !script.contains(k)).collect();
        let refused: Vec<_> = script.iter().filter(|k| !table.contains(k)).collect();
        if !missing.is_empty() || !refused.is_empty() {
            differ.push(format!(
                "crd.init's {list} lacks {missing:?} and lists {refused:?}, which a router's crd refuses"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// A value as a shell word: in single quotes, each `'` closed, escaped, reopened.
fn shell_word(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Every key a router's crd takes, set in UCI with its sample (a list key as a
/// UCI `list` of its sample's items), reaches crd.conf at its scope and parses
/// there; a value with blanks and both quotes at its ends arrives as written.
#[test]
fn procd_script_translates_every_key_lists_and_quotes() {
    let sb = Sandbox::new("procd-keys");
    let username = r#""it's" a "b""#;
    let mut uci = vec![
        "UCI_SECTIONS_module=m1".to_string(),
        "UCI_m1_name=WanDown".into(),
    ];
    for (section, keys) in [("main", router_keys(false)), ("m1", router_keys(true))] {
        for k in KEYS.iter().filter(|k| keys.iter().any(|n| n == k.name)) {
            if k.list {
                for item in k.sample.split_whitespace() {
                    uci.push(format!(
                        "uci_add_list {section} {} {}",
                        k.name,
                        shell_word(item)
                    ));
                }
            } else if k.name == "username" {
                uci.push(format!("UCI_{section}_username={}", shell_word(username)));
            } else {
                uci.push(format!("UCI_{section}_{}={}", k.name, shell_word(k.sample)));
            }
        }
    }
    let (code, out, err) = procd(&sb, &uci.join("\n"), "start_service");
    assert_eq!(code, 0, "{out}{err}");
    let conf = sb.read("var/etc/crd.conf");
    let (main, module) = conf
        .split_once("[module WanDown]\n")
        .expect("the module's section");
    for (part, keys) in [(main, router_keys(false)), (module, router_keys(true))] {
        for k in KEYS.iter().filter(|k| keys.iter().any(|n| n == k.name)) {
            let value = if k.name == "username" {
                username
            } else {
                k.sample
            };
            let line = format!("{} = \"{value}\"", k.name);
            assert!(part.lines().any(|l| l == line), "{line} in\n{part}");
        }
    }
    let c = parse_config(&conf, Path::new("crd.conf")).unwrap_or_else(|e| panic!("{e}\n{conf}"));
    assert_eq!(c.mqtt.username, username);
    assert_eq!(
        c.mqtt.brokers().collect::<Vec<_>>(),
        ["192.0.2.1:1883", "mqtt.example.org"]
    );
    assert_eq!(c.commands, ["Reboot", "Ping"]);
}

/// A newline in a UCI value would start a crd.conf line of its own: the script
/// refuses it, starts nothing, and keeps the crd.conf crd runs with.
#[test]
fn procd_script_refuses_a_value_with_a_newline() {
    let sb = Sandbox::new("procd-newline");
    let (code, _, err) = procd(&sb, "UCI_main_node=edge-7", "start_service");
    assert_eq!(code, 0, "{err}");
    let before = sb.read("var/etc/crd.conf");
    fs::remove_file(sb.path("procd.log")).unwrap();
    for uci in [
        "UCI_main_client_id='x\nbroker = 203.0.113.9'",
        "UCI_SECTIONS_module=m1\nUCI_m1_name='A]\n[module B'",
    ] {
        let (code, _, err) = procd(&sb, uci, "start_service\nreload_service");
        assert_ne!(code, 0);
        assert!(err.contains("holds a newline"), "{err}");
        assert!(!sb.exists("procd.log"), "nothing started or signalled");
        assert_eq!(sb.read("var/etc/crd.conf"), before);
        assert!(!sb.exists("var/etc/crd.conf.new"));
    }
}

#[test]
fn sysvinit_script_starts_reloads_and_stops_the_real_daemon() {
    let sb = Sandbox::new("sysv");
    sb.module("Tick", "echo t >> ../../ticks\nexit 1", None);
    sb.config("interval = 200ms");
    let defaults = sb.path("default-crd");
    fs::write(
        &defaults,
        format!(
            "DAEMON={}\nCONF={}\nPIDFILE={}\nLOGFILE={}\n",
            bin(),
            sb.conf().display(),
            sb.path("crd.pid").display(),
            sb.path("crd.log").display()
        ),
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", root().join("tests/init").display());
    let ssd_log = sb.path("ssd.log");
    let envs = [
        ("CRD_DEFAULTS", defaults.to_str().unwrap()),
        ("PATH", path.as_str()),
        ("SSD_LOG", ssd_log.to_str().unwrap()),
    ];
    let init = |arg: &str| sh(&format!("sh cross/sysvinit/crd {arg}"), &envs);
    assert_eq!(init("start").0, 0);
    assert!(
        wait_for(Duration::from_secs(20), || count_lines(&sb.path("ticks"))
            >= 2),
        "{}",
        sb.read("crd.log")
    );
    assert_eq!(
        init("status"),
        (0, "crd is running\n".to_string(), String::new())
    );
    assert_eq!(init("reload").0, 0);
    assert!(wait_for(Duration::from_secs(20), || sb
        .read("crd.log")
        .contains("SIGHUP: reloading")));
    assert_eq!(init("stop").0, 0);
    assert!(!sb.exists("crd.pid"), "pidfile removed");
    assert!(
        wait_for(Duration::from_secs(20), || sb
            .read("crd.log")
            .contains("stopped")),
        "{}",
        sb.read("crd.log")
    );
    assert_eq!(init("status").0, 3);
    let ssd = sb.read("ssd.log");
    assert!(ssd.starts_with("-S -q -b -m -p "), "{ssd}");

    // A broken config is refused before anything starts.
    sb.config("interval = never");
    let (code, _, err) = init("start");
    assert_eq!(code, 2);
    assert!(err.contains("is invalid"), "{err}");
}

#[test]
fn ipk_holds_the_binary_init_script_and_conffile() {
    let sb = Sandbox::new("ipk");
    let (code, out, err) = sh(
        "cross/ipk.sh mt7621",
        &[
            ("CRD_IPK_BIN", &bin()),
            ("CRD_IPK_OUT", sb.dir.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ipk = out.trim();
    assert!(ipk.ends_with("crd_0.1.0-1_mipsel_24kc.ipk"), "{ipk}");
    let list = |cmd: &str| sh(cmd, &[]).1;
    assert_eq!(
        list(&format!("tar tzf {ipk}")),
        "./debian-binary\n./control.tar.gz\n./data.tar.gz\n"
    );
    assert_eq!(list(&format!("tar xzOf {ipk} ./debian-binary")), "2.0\n");
    let control = list(&format!(
        "tar xzOf {ipk} ./control.tar.gz | tar xzOf - ./control"
    ));
    assert!(
        control.contains("Package: crd\nVersion: 0.1.0-1\n"),
        "{control}"
    );
    assert!(control.contains("Architecture: mipsel_24kc\n"), "{control}");
    assert_eq!(
        list(&format!(
            "tar xzOf {ipk} ./control.tar.gz | tar xzOf - ./conffiles"
        )),
        "/etc/config/crd\n"
    );
    let data = list(&format!("tar xzOf {ipk} ./data.tar.gz | tar tzvf -"));
    for (mode, file) in [
        ("-rwxr-xr-x", "./usr/sbin/crd"),
        ("-rwxr-xr-x", "./etc/init.d/crd"),
        ("-rw-r--r--", "./etc/config/crd"),
        (
            "-rwxr-xr-x",
            "./opt/CRD/modules/restart-service/restart-service",
        ),
    ] {
        assert!(
            data.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(file)),
            "{file} in\n{data}"
        );
    }
    let config = list(&format!(
        "tar xzOf {ipk} ./data.tar.gz | tar xzOf - ./etc/config/crd"
    ));
    assert!(
        config.contains("option spool_dir '/overlay/crd/spool'")
            && config.contains("option spool_size '4M'")
            && config.contains("option spool_sync_interval '1s'")
            && !config.contains('@'),
        "{config}"
    );
    let packed = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar xzOf {ipk} ./data.tar.gz | tar xzOf - ./usr/sbin/crd"
        ))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        packed,
        fs::read(bin()).unwrap(),
        "the packed binary is the one given"
    );
}

#[test]
fn make_install_lays_out_the_tree_and_keeps_an_existing_config() {
    let sb = Sandbox::new("install");
    let dest = sb.path("root");
    let make = |target: &str| {
        let mut c = Command::new("make");
        c.arg("-s")
            .arg(target)
            .arg(format!("DESTDIR={}", dest.display()))
            .arg("PREFIX=/usr")
            .arg(format!("BIN={}", bin()))
            .current_dir(root());
        run_to_end(c)
    };
    let (code, out, err) = make("install-systemd");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = make("install-sysv");
    assert_eq!(code, 0, "{err}");
    for f in [
        "usr/sbin/crd",
        "etc/CRD/crd.conf",
        "opt/CRD/modules/restart-service/restart-service",
        "usr/share/crd/modules/LogSize/check",
        "etc/init.d/crd",
    ] {
        assert!(dest.join(f).exists(), "{f}");
    }
    let unit = fs::read_to_string(dest.join("lib/systemd/system/crd.service")).unwrap();
    for line in [
        "ExecStart=/usr/sbin/crd -c /etc/CRD/crd.conf",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "StateDirectory=crd",
        "Restart=always",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    assert!(
        fs::read_to_string(dest.join("etc/init.d/crd"))
            .unwrap()
            .contains("DAEMON=/usr/sbin/crd\n")
    );
    // The installed default config and modules pass the installed binary's check.
    let conf = dest.join("etc/CRD/crd.conf");
    fs::write(
        &conf,
        format!("modules_dir = {}\n", dest.join("opt/CRD/modules").display()),
    )
    .unwrap();
    let mut c = Command::new(dest.join("usr/sbin/crd"));
    c.arg("-c").arg(&conf).arg("--check-config");
    let (code, out, err) = run_to_end(c);
    assert_eq!(code, 0, "{out}{err}");
    // A second install keeps the operator's config.
    assert_eq!(make("install").0, 0);
    assert!(
        fs::read_to_string(&conf)
            .unwrap()
            .starts_with("modules_dir = ")
    );
}

/// The .deb for the collector host (`make deb`, cross/deb.sh), packed
/// with the binary under test: its layout and control files, installed with
/// `dpkg -i` into a scratch root, run from there; its manual page rendered by
/// `man` without a warning; its systemd unit rated by `systemd-analyze
/// security --offline=yes` at 3.0 or less (`.ci/run` installs dpkg, man-db and
/// systemd; lintian runs on the release package in `make deb-lint`).
#[test]
fn deb_installs_into_a_scratch_root_and_runs() {
    let sb = Sandbox::new("deb");
    let (code, out, err) = sh(
        "cross/deb.sh",
        &[
            ("CRD_DEB_BIN", &bin()),
            ("CRD_DEB_OUT", sb.dir.to_str().unwrap()),
            ("CRD_DEB_COMPRESS", "gzip"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let deb = out.trim().to_string();
    assert!(deb.ends_with("/crd_0.1.0_amd64.deb"), "{deb}");
    let run = |cmd: &str| {
        let (code, out, err) = sh(cmd, &[]);
        assert_eq!(code, 0, "{cmd}: {err}");
        (out, err)
    };
    let (control, _) = run(&format!("dpkg-deb -f {deb}"));
    for field in [
        "Package: crd\n",
        "Version: 0.1.0\n",
        "Architecture: amd64\n",
        "Section: admin\n",
    ] {
        assert!(control.contains(field), "{field} in\n{control}");
    }
    let (conffiles, _) = run(&format!(
        "dpkg-deb --ctrl-tarfile {deb} | tar xOf - ./conffiles"
    ));
    assert_eq!(conffiles, "/etc/CRD/crd.conf\n");
    let (list, _) = run(&format!("dpkg-deb -c {deb}"));
    for (mode, file) in [
        ("-rwxr-xr-x root/root", "./usr/sbin/crd"),
        ("-rw-r--r-- root/root", "./lib/systemd/system/crd.service"),
        ("-rw-r--r-- root/root", "./etc/CRD/crd.conf"),
        ("-rw-r--r-- root/root", "./usr/share/man/man8/crd.8.gz"),
        ("-rw-r--r-- root/root", "./usr/share/doc/crd/copyright"),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(file)),
            "{file} in\n{list}"
        );
    }

    // dpkg -i into a scratch root, then the installed binary and config.
    let r = sb.path("root");
    fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let rs = r.display();
    run(&format!("dpkg --root={rs} --log={rs}/dpkg.log -i {deb}"));
    let (st, _) = run(&format!("dpkg --root={rs} -s crd"));
    assert!(st.contains("Status: install ok installed"), "{st}");
    let (v, _) = run(&format!("{rs}/usr/sbin/crd --version"));
    assert_eq!(v, "crd 0.1.0\n");
    let (ok, _) = run(&format!(
        "{rs}/usr/sbin/crd -c {rs}/etc/CRD/crd.conf --check-config"
    ));
    assert!(ok.contains("crd.conf: ok"), "{ok}");

    // The manual page, as packed (a dpkg configured to skip /usr/share/man, as
    // container images are, would not install it), renders without a warning.
    let man = sb.path("crd.8.gz");
    run(&format!(
        "dpkg-deb --fsys-tarfile {deb} | tar xOf - ./usr/share/man/man8/crd.8.gz > {}",
        man.display()
    ));
    let (page, warnings) = run(&format!("MANWIDTH=80 man --warnings -l {}", man.display()));
    assert_eq!(warnings, "", "man warns");
    for section in [
        "NAME",
        "SYNOPSIS",
        "COMMANDS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
    ] {
        assert!(
            page.contains(&format!("\n{section}\n")),
            "{section} in\n{page}"
        );
    }

    // The unit earns its privileges: exposure 3.0 or less.
    let exposure = |unit: &Path| -> f64 {
        let (out, _) = run(&format!(
            "systemd-analyze security --offline=yes {} 2>&1",
            unit.display()
        ));
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{out}"));
        let v = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
        v.parse().unwrap()
    };
    let unit = r.join("lib/systemd/system/crd.service");
    let score = exposure(&unit);
    assert!(score <= 3.0, "exposure {score}");
    // The root variant for edge remediation, for the record (docs/deb.md states it).
    let root_unit = sb.path("crd-root.service");
    let text = fs::read_to_string(root().join("cross/systemd/crd.service")).unwrap();
    fs::write(&root_unit, text.replace("@SBINDIR@", "/usr/sbin")).unwrap();
    let root_score = exposure(&root_unit);
    eprintln!("systemd-analyze exposure: collector unit {score}, root unit {root_score}");
    assert!(root_score > score);
}
