//! The command line's grammar by hand: each command a table of options and
//! positional arguments, one parser for all of them, and `--help` written from
//! the same tables, rather than argh's derive, which costs a router's binary
//! about 10 KB. The behaviour is argh's: options before or between
//! positionals, `--` ends options, `--help` or a leading `help` prints usage,
//! a greedy last positional takes every remaining argument as it is, and errors
//! name the argument (`Unrecognized argument: --bogus`). Pure: strings in, a
//! `Parsed` or a message out.

/// An option: `--long`, maybe `-s`, with a value (its name in usage) or a switch.
pub struct Opt {
    pub long: &'static str,
    pub short: Option<char>,
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// A positional argument; a greedy one is last and takes all that remains.
pub struct Pos {
    pub name: &'static str,
    pub required: bool,
    pub greedy: bool,
    pub help: &'static str,
}

/// A command (or the top level, whose `subcommands` are the commands).
pub struct Spec {
    pub name: &'static str,
    pub about: &'static str,
    pub opts: &'static [Opt],
    pub pos: &'static [Pos],
    pub subcommands: &'static [Spec],
}

/// What one command's arguments said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Options given, by long name, with their values ("" for a switch).
    opts: Vec<(&'static str, String)>,
    pub pos: Vec<String>,
    /// The top level only: the command's index in `subcommands` and its arguments.
    pub sub: Option<(usize, Box<Parsed>)>,
}

impl Parsed {
    pub fn switch(&self, long: &str) -> bool {
        self.opts.iter().any(|(l, _)| *l == long)
    }
    /// The value of the last `--long VALUE`.
    pub fn value(&self, long: &str) -> Option<String> {
        self.opts
            .iter()
            .rev()
            .find(|(l, _)| *l == long)
            .map(|(_, v)| v.clone())
    }
    /// Positional `i`, if given.
    pub fn pos(&self, i: usize) -> Option<String> {
        self.pos.get(i).cloned()
    }
}

/// Why parsing stopped: help was asked for (print it, exit 0), or an error
/// (print it, exit 2).
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Help(String),
    Error(String),
}

/// Parses `args` (without the program name) against `spec`; `path` is the
/// command as typed so far (`crd`, `crd emit`), for usage lines.
pub fn parse(spec: &'static Spec, path: &str, args: &[&str]) -> Result<Parsed, Stop> {
    let mut p = Parsed::default();
    let mut only_pos = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        i += 1;
        let greedy = spec
            .pos
            .get(p.pos.len())
            .is_some_and(|g| g.greedy && p.pos.len() + 1 == spec.pos.len());
        if greedy {
            p.pos.extend(args[i - 1..].iter().map(|s| s.to_string()));
            break;
        }
        if !only_pos && (a == "--help" || (a == "help" && i == 1)) {
            return Err(Stop::Help(help(spec, path)));
        }
        if !only_pos && a == "--" {
            only_pos = true;
            continue;
        }
        if !only_pos && a.len() > 1 && a.starts_with('-') {
            let opt = spec.opts.iter().find(|o| {
                a.strip_prefix("--") == Some(o.long)
                    || (o.short.is_some_and(|c| a.len() == 2 && a.ends_with(c)))
            });
            let Some(o) = opt else {
                return Err(unrecognized(a));
            };
            let value = match o.value {
                None => String::new(),
                Some(_) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        v.to_string()
                    }
                    None => {
                        return Err(Stop::Error(format!("No value provided for option '{a}'.")));
                    }
                },
            };
            p.opts.push((o.long, value));
            continue;
        }
        if p.pos.len() < spec.pos.len() {
            p.pos.push(a.to_string());
            continue;
        }
        if p.pos.is_empty() && !spec.subcommands.is_empty() {
            let Some(k) = spec.subcommands.iter().position(|s| s.name == a) else {
                return Err(unrecognized(a));
            };
            let sub = &spec.subcommands[k];
            let inner = parse(sub, &format!("{path} {}", sub.name), &args[i..])?;
            p.sub = Some((k, Box::new(inner)));
            return Ok(p);
        }
        return Err(unrecognized(a));
    }
    let missing: Vec<&str> = spec.pos[p.pos.len().min(spec.pos.len())..]
        .iter()
        .filter(|q| q.required)
        .map(|q| q.name)
        .collect();
    if !missing.is_empty() {
        return Err(Stop::Error(format!(
            "Required positional arguments not provided:\n    {}",
            missing.join("\n    ")
        )));
    }
    Ok(p)
}

fn unrecognized(a: &str) -> Stop {
    Stop::Error(format!("Unrecognized argument: {a}"))
}

/// `-c, --config` or `--sync`.
fn flags(o: &Opt) -> String {
    match o.short {
        Some(c) => format!("-{c}, --{}", o.long),
        None => format!("--{}", o.long),
    }
}

/// One help entry: two spaces, the name padded to 18, the text wrapped at 80
/// columns under itself.
fn entry(out: &mut String, name: &str, text: &str) {
    out.push_str("  ");
    out.push_str(name);
    let mut col = 2 + name.len();
    if col >= 20 {
        out.push('\n');
        col = 0;
    }
    out.extend(std::iter::repeat_n(' ', 20 - col));
    col = 20;
    let mut first = true;
    for w in text.split_whitespace() {
        if !first && col + 1 + w.len() > 80 {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', 20));
            col = 20;
        } else if !first {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += w.len();
        first = false;
    }
    out.push('\n');
}

/// The usage text of `spec`.
pub fn help(spec: &Spec, path: &str) -> String {
    let mut usage = format!("Usage: {path}");
    for o in spec.opts {
        let short = o.short.map_or(format!("--{}", o.long), |c| format!("-{c}"));
        match o.value {
            Some(v) => usage.push_str(&format!(" [{short} <{v}>]")),
            None => usage.push_str(&format!(" [{short}]")),
        }
    }
    if !spec.pos.is_empty() {
        usage.push_str(" [--]");
    }
    for q in spec.pos {
        let dots = if q.greedy { "..." } else { "" };
        match q.required {
            true => usage.push_str(&format!(" <{}{dots}>", q.name)),
            false => usage.push_str(&format!(" [<{}{dots}>]", q.name)),
        }
    }
    if !spec.subcommands.is_empty() {
        usage.push_str(" [<command>] [<args>]");
    }
    let mut out = format!("{usage}\n\n{}\n", spec.about);
    if !spec.pos.is_empty() {
        out.push_str("\nPositional Arguments:\n");
        for q in spec.pos {
            entry(&mut out, q.name, q.help);
        }
    }
    out.push_str("\nOptions:\n");
    for o in spec.opts {
        entry(&mut out, &flags(o), o.help);
    }
    entry(&mut out, "--help, help", "display usage information");
    if !spec.subcommands.is_empty() {
        out.push_str("\nCommands:\n");
        for s in spec.subcommands {
            entry(&mut out, s.name, s.about);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    static SUB: [Spec; 1] = [Spec {
        name: "send",
        about: "send a command",
        opts: &[
            Opt {
                long: "all",
                short: None,
                value: None,
                help: "every node",
            },
            Opt {
                long: "ttl",
                short: None,
                value: Some("ttl"),
                help: "how long",
            },
        ],
        pos: &[
            Pos {
                name: "node",
                required: true,
                greedy: false,
                help: "the node",
            },
            Pos {
                name: "args",
                required: false,
                greedy: true,
                help: "its arguments",
            },
        ],
        subcommands: &[],
    }];
    static TOP: Spec = Spec {
        name: "crd",
        about: "the daemon",
        opts: &[Opt {
            long: "config",
            short: Some('c'),
            value: Some("config"),
            help: "config file",
        }],
        pos: &[],
        subcommands: &SUB,
    };

    fn run(args: &[&str]) -> Result<Parsed, Stop> {
        parse(&TOP, "crd", args)
    }

    #[test]
    fn options_commands_and_a_greedy_tail() {
        let p = run(&[
            "-c", "/x.conf", "send", "--ttl", "5s", "r1", "-f", "--", "a b",
        ])
        .unwrap();
        assert_eq!(p.value("config").as_deref(), Some("/x.conf"));
        let (k, s) = p.sub.unwrap();
        assert_eq!(k, 0);
        assert_eq!(s.value("ttl").as_deref(), Some("5s"));
        assert!(!s.switch("all"));
        assert_eq!(s.pos, ["r1", "-f", "--", "a b"], "the tail as given");
        let p = run(&["send", "--", "--all"]).unwrap();
        assert_eq!(p.sub.unwrap().1.pos, ["--all"], "after --, no options");
        assert_eq!(run(&[]).unwrap(), Parsed::default());
    }

    #[test]
    fn errors_and_help_say_what() {
        assert_eq!(
            run(&["--bogus"]),
            Err(Stop::Error("Unrecognized argument: --bogus".into()))
        );
        assert_eq!(
            run(&["nosuch"]),
            Err(Stop::Error("Unrecognized argument: nosuch".into()))
        );
        assert_eq!(
            run(&["send"]),
            Err(Stop::Error(
                "Required positional arguments not provided:\n    node".into()
            ))
        );
        assert_eq!(
            run(&["-c"]),
            Err(Stop::Error("No value provided for option '-c'.".into()))
        );
        let Err(Stop::Help(h)) = run(&["send", "--help"]) else {
            panic!("help")
        };
        assert!(
            h.starts_with(
                "Usage: crd send [--all] [--ttl <ttl>] [--] <node> [<args...>]\n\nsend a command\n"
            ),
            "{h}"
        );
        assert!(h.contains("\n  --ttl             how long\n"), "{h}");
        let Err(Stop::Help(h)) = run(&["help"]) else {
            panic!("help")
        };
        assert!(
            h.contains("\nCommands:\n  send              send a command\n"),
            "{h}"
        );
    }

    #[test]
    fn help_text_wraps_at_80_columns_under_its_column() {
        let mut out = String::new();
        entry(&mut out, "--x", &"word ".repeat(40));
        for l in out.lines() {
            assert!(l.len() <= 80, "{l:?}");
        }
        assert!(out.lines().skip(1).all(|l| l.starts_with(&" ".repeat(20))));
    }
}
