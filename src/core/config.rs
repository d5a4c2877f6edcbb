//! The configuration: `crd.conf` and each module's `module.conf`, parsed from text.
//!
//! This file owns the line-based INI dialect (`key = value`, `#` comment lines,
//! `[module NAME]` sections), the value syntaxes (durations, sizes, booleans) and the
//! defaults. It is pure: callers read the file and pass its text and its path (for
//! messages); nothing here opens files or reads the clock. Every error names
//! `file:line` and the key. A whole file is parsed even after an error so that
//! `crd --check-config` can list every problem at once. A relative path key is
//! joined to the config file's directory here (a path computation, no IO).
//!
//! Precedence for a module's settings, lowest first: built-in defaults, the global
//! keys of `crd.conf`, the module's own `module.conf`, the `[module NAME]` section of
//! `crd.conf`.
//!
//! `KEYS` lists every key with where it may be set and which builds take it; a
//! test holds it to the parser's match arms, and `tests/packaging.rs` holds the
//! OpenWrt init script's key lists to it.
//!
//! There are no inline comments: `#` is a legal character inside values (MQTT topic
//! filters and passwords use it), so only a line whose first non-blank character is
//! `#` is a comment.

use crate::core::topic;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest accepted line, in bytes. A longer line is an error, not a truncation.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest accepted config file, in bytes; the reader enforces it before parsing.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Most topic filters one module subscribes to.
pub const MAX_FILTERS_PER_MODULE: usize = 16;
/// Default and bounds of `max_message`, the largest message payload a subscribed
/// module is given, bytes.
pub const DEFAULT_MAX_MESSAGE: u32 = 64 << 10;
/// A message is journaled as one spool record with its topic (up to 64 KiB), so
/// it must leave room for that below `SPOOL_RECORD_LIMIT_BYTES`.
pub const MAX_MESSAGE_LIMIT: u64 = 896 << 10;
/// Default and most of `max_hops`: runs of messages a chain of collectors
/// makes from one event that no message caused (1: a collector runs nothing
/// on another collector's run events).
pub const DEFAULT_MAX_HOPS: u32 = 1;
pub const MAX_HOPS_LIMIT: u32 = 16;
/// Longest module name, in bytes (also the support-module name rule).
pub const MAX_NAME_BYTES: usize = 64;
/// Bounds of a register's `period`: at least 1 s (buckets of 100 ms), at most
/// 31 days.
pub const MIN_PERIOD: Duration = Duration::from_secs(1);
pub const MAX_PERIOD: Duration = Duration::from_secs(31 * 86_400);
/// Default and largest `register_keys` (keys kept per rule module).
pub const DEFAULT_REGISTER_KEYS: u32 = 10_000;
pub const MAX_REGISTER_KEYS: u32 = 100_000;
/// Largest magnitude of a threshold or of a value fed to a register: sums of
/// such values stay exact to well below 1 in f64.
pub const MAX_REGISTER_VALUE: f64 = 1e15;
/// Longest `value` path, bytes, and most levels in it.
pub const MAX_VALUE_PATH_BYTES: usize = 128;
pub const MAX_VALUE_PATH_LEVELS: usize = 16;
/// Longest `equals` text, bytes.
pub const MAX_EQUALS_BYTES: usize = 64;

/// What a register keeps per key (`register`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterKind {
    /// Messages in the period.
    Count,
    /// Sum of the values in the period.
    Sum,
    /// Mean of the values in the period.
    Avg,
    Min,
    Max,
    /// The latest value (no period).
    Last,
    /// Per-second increase of a counter over the period (a decrease is a reset).
    Rate,
}

impl RegisterKind {
    pub fn name(self) -> &'static str {
        match self {
            RegisterKind::Count => "count",
            RegisterKind::Sum => "sum",
            RegisterKind::Avg => "avg",
            RegisterKind::Min => "min",
            RegisterKind::Max => "max",
            RegisterKind::Last => "last",
            RegisterKind::Rate => "rate",
        }
    }
}

/// Which messages share a register key (`by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegisterBy {
    /// The crd event's node (another payload: its topic).
    #[default]
    Node,
    Topic,
    /// The crd event's module (another payload: its topic).
    Module,
    /// One key for every message.
    All,
}

/// A finite number in a setting, equal when its bits are.
#[derive(Clone, Copy, Debug)]
pub struct Num(pub f64);

impl PartialEq for Num {
    fn eq(&self, o: &Num) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for Num {}

/// A rule module's register and condition (`register`, `value`, `period`, `by`,
/// `register_keys`, `above`, `below`, `equals`); per module only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSettings {
    pub register: Option<RegisterKind>,
    pub value: Option<String>,
    pub period: Option<Duration>,
    pub by: Option<RegisterBy>,
    pub register_keys: Option<u32>,
    pub above: Option<Num>,
    pub below: Option<Num>,
    pub equals: Option<String>,
}

/// Every key of a rule module, in the order a problem is blamed on them.
pub const RULE_KEYS: [&str; 8] = [
    "register",
    "value",
    "period",
    "by",
    "register_keys",
    "above",
    "below",
    "equals",
];

impl RuleSettings {
    /// The key a `problem` is blamed on: `register` when it is set, else the
    /// first stray rule key.
    pub fn blamed_key(&self) -> &'static str {
        let set = [
            self.register.is_some(),
            self.value.is_some(),
            self.period.is_some(),
            self.by.is_some(),
            self.register_keys.is_some(),
            self.above.is_some(),
            self.below.is_some(),
            self.equals.is_some(),
        ];
        RULE_KEYS
            .iter()
            .zip(set)
            .find(|(_, set)| *set)
            .map_or("register", |(k, _)| k)
    }

    /// What does not fit together, in words; `subscribed` says whether the module
    /// has `subscribe`.
    pub fn problem(&self, subscribed: bool) -> Option<String> {
        let Some(kind) = self.register else {
            let stray = [
                ("value", self.value.is_some()),
                ("period", self.period.is_some()),
                ("by", self.by.is_some()),
                ("register_keys", self.register_keys.is_some()),
                ("above", self.above.is_some()),
                ("below", self.below.is_some()),
                ("equals", self.equals.is_some()),
            ];
            return stray
                .iter()
                .find(|(_, set)| *set)
                .map(|(k, _)| format!("`{k}` needs `register`"));
        };
        let k = kind.name();
        if !subscribed {
            return Some(format!(
                "`register = {k}` needs `subscribe` (a register is fed by messages)"
            ));
        }
        if self.value.is_none() && kind != RegisterKind::Count {
            return Some(format!(
                "`register = {k}` needs `value` (a field of the payload)"
            ));
        }
        match (kind, self.period) {
            (RegisterKind::Last, Some(_)) => {
                return Some("`register = last` keeps no period: drop `period`".into());
            }
            (RegisterKind::Last, None) | (_, Some(_)) => {}
            (_, None) => return Some(format!("`register = {k}` needs `period`")),
        }
        if self.equals.is_some() && kind != RegisterKind::Last {
            return Some(format!(
                "`equals` is for `register = last`, not `{k}` (use above or below)"
            ));
        }
        let conditions = [
            self.above.is_some(),
            self.below.is_some(),
            self.equals.is_some(),
        ];
        if conditions.iter().filter(|c| **c).count() > 1 {
            return Some(
                "one condition per rule (above, below or equals); two rules on one filter are two modules"
                    .into(),
            );
        }
        None
    }
}

/// How a check's exit code is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convention {
    /// 0 = condition present, 1 = not present, anything else = check error.
    Exit,
    /// Nagios/Monitoring plugins: 0 OK, 1 warning, 2 critical, 3 unknown.
    Nagios,
}

/// Home Assistant's binary_sensor device classes (`BinarySensorDeviceClass`),
/// the values `device_class` takes: how HA shows a module's ON and OFF. One
/// string, separated by spaces: a table of 28 slices cost a router's build
/// 224 bytes more.
pub const HA_DEVICE_CLASSES: &str = concat!(
    "battery battery_charging carbon_monoxide cold connectivity ",
    "door garage_door gas heat light lock moisture motion moving ",
    "occupancy opening plug power presence problem running ",
    "safety smoke sound tamper update vibration window",
);

/// Nagios severities that can trigger a response (`respond_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning = 1,
    Critical = 2,
}

/// Everything that can be set per module (and, as a default for all modules, globally).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Address-space limit of each child, in bytes (`RLIMIT_AS`).
    pub memory_limit: u64,
    /// CPU-time limit of each child, in whole seconds (`RLIMIT_CPU`).
    pub cpu_limit: u32,
    /// Largest file a child may write, in bytes (`RLIMIT_FSIZE`).
    pub file_limit: u64,
    /// Processes of the child's user (`RLIMIT_NPROC`); 0 = not set. Root ignores it.
    pub process_limit: u32,
    /// Output kept per run (stdout and stderr together, head and tail), in bytes.
    pub output_limit: u32,
    pub trigger_after: u32,
    pub cooldown: Duration,
    pub convention: Convention,
    pub respond_at: Severity,
    pub enabled: bool,
    /// `device_class`: the module's Home Assistant binary_sensor class, one of
    /// `HA_DEVICE_CLASSES` (`problem`: ON shows as a problem).
    pub device_class: &'static str,
    /// `subscribe`: MQTT topic filters; a module with any runs once per matching
    /// message instead of on a schedule (the collector). Per module only.
    pub subscribe: Vec<String>,
    /// `subscribe_group`: split the module's work with the other collectors of
    /// this group, each seeing the whole stream (`collect::group`); global
    /// default or per module.
    pub subscribe_group: Option<String>,
    /// A register and its condition, evaluated without a fork (per module only).
    pub rule: RuleSettings,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            memory_limit: 128 << 20,
            cpu_limit: 10,
            file_limit: 64 << 20,
            process_limit: 0,
            output_limit: 4096,
            trigger_after: 1,
            cooldown: Duration::ZERO,
            convention: Convention::Exit,
            respond_at: Severity::Critical,
            enabled: true,
            device_class: "problem",
            subscribe: Vec::new(),
            subscribe_group: None,
            rule: RuleSettings::default(),
        }
    }
}

/// The spool's framing, which the spool keys are checked against here: a segment
/// file's header and a record's header, and the hard ceiling on a record's payload
/// (bytes). `spool::format` draws the layout and takes these numbers from here, so
/// config validation and the format cannot disagree.
pub const SPOOL_SEGMENT_HEADER_BYTES: usize = 36;
pub const SPOOL_RECORD_HEADER_BYTES: usize = 18;
pub const SPOOL_RECORD_LIMIT_BYTES: u32 = 1 << 20;
/// Most segment files one spool may have (`spool_size / spool_segment`): the spool
/// keeps one entry per segment and walks them per append.
pub const MAX_SPOOL_SEGMENTS: u64 = 4096;
/// Largest `spool_segment` and `spool_sync_bytes`, bytes. While the disk fails,
/// crd keeps up to 4 x max(spool_sync_bytes, spool_segment) of written records in
/// RAM (`SpoolConfig::unsynced_limit`), and re-making a vanished directory reads
/// one segment: both stay within `SPOOL_UNSYNCED_RAM_LIMIT_BYTES`, an eighth of
/// a 64 MB router's RAM.
pub const MAX_SPOOL_SEGMENT_BYTES: u64 = 2 << 20;
pub const SPOOL_UNSYNCED_RAM_LIMIT_BYTES: u64 = 4 * MAX_SPOOL_SEGMENT_BYTES;

/// The spool's settings (`spool_*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Total bytes of all segments.
    pub size: u64,
    /// Bytes per segment file.
    pub segment: u64,
    pub sync_bytes: u64,
    pub sync_interval: Duration,
    /// fdatasync after every append (`spool_sync = always`).
    pub sync_always: bool,
    /// Largest payload accepted, bytes.
    pub max_record: u32,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            size: 4 << 20,
            segment: 256 << 10,
            sync_bytes: 64 << 10,
            sync_interval: Duration::from_secs(1),
            sync_always: false,
            max_record: 64 << 10,
        }
    }
}

impl SpoolConfig {
    /// Bytes of written-but-unsynced data kept in RAM while syncs fail; appends past
    /// it are refused until a sync succeeds.
    pub fn unsynced_limit(&self) -> u64 {
        4 * self.sync_bytes.max(self.segment)
    }
}

/// The daemon-wide settings plus per-module defaults and `[module NAME]` overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where this config came from (for messages and `CRD_CONFIG`).
    pub path: PathBuf,
    /// Empty means "use the hostname"; the caller resolves it.
    pub node: String,
    pub modules_dir: PathBuf,
    pub spool_dir: PathBuf,
    pub control_socket: PathBuf,
    pub max_parallel: u32,
    pub log_level: log::LevelFilter,
    /// `spool_size`, `spool_segment`, `spool_sync_bytes`, `spool_sync_interval`,
    /// `spool_sync`, `spool_max_record`.
    pub spool: SpoolConfig,
    pub mqtt: MqttSettings,
    /// `repository`: where `crd --install NAME` looks without `-l`; empty: none.
    pub repository: String,
    /// `install_max_size`: the most bytes `crd --install` fetches (archive) and
    /// unpacks (files of the module), each.
    pub install_max_size: u64,
    /// `max_message`: the largest message payload a subscribed module is given,
    /// bytes; a larger one becomes an `error` event naming its topic and size.
    pub max_message: u32,
    /// `max_hops`: a collector runs no module on a message whose `hop`
    /// reached it (a run's events carry its message's hop plus one).
    pub max_hops: u32,
    /// `commands`: the support modules a remote command may run (none by default:
    /// remote commands are off).
    pub commands: Vec<String>,
    /// `command_key_file`: the shared secret remote commands must be signed with
    /// (HMAC-SHA256); `None`: commands are not signed.
    pub command_key_file: Option<PathBuf>,
    /// `fleet_html` (collector builds): the fleet page the collector rewrites.
    pub fleet_html: Option<PathBuf>,
    /// `metrics_file`: where crd writes its `crd status` figures for
    /// Prometheus (node_exporter's textfile collector); `None`: nowhere.
    pub metrics_file: Option<PathBuf>,
    /// `metrics_interval`: how often `metrics_file` is written.
    pub metrics_interval: Duration,
    /// `group_join_wait` (collector builds): how long a collector new to a
    /// `subscribe_group` waits before it takes a share of the work; `None`:
    /// the longest `period` of the group's rules.
    pub group_join_wait: Option<Duration>,
    pub defaults: ModuleSettings,
    /// `[module NAME]` sections, in file order.
    pub sections: Vec<Section>,
}

/// One `[module NAME]` section: its overrides, applied after the module's own file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: u32,
    pub overrides: Vec<Setting>,
    /// Each rule key (`RULE_KEYS`) the section sets, and its line.
    pub set_at: Vec<(&'static str, u32)>,
}

/// One parsed per-module `key = value`, kept so it can be applied later in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Interval(Duration),
    Timeout(Duration),
    MemoryLimit(u64),
    CpuLimit(u32),
    FileLimit(u64),
    ProcessLimit(u32),
    OutputLimit(u32),
    TriggerAfter(u32),
    Cooldown(Duration),
    Convention(Convention),
    RespondAt(Severity),
    Enabled(bool),
    DeviceClass(&'static str),
    Subscribe(Vec<String>),
    SubscribeGroup(String),
    Register(RegisterKind),
    Value(String),
    Period(Duration),
    By(RegisterBy),
    RegisterKeys(u32),
    Above(Num),
    Below(Num),
    Equals(String),
}

impl Setting {
    pub fn apply(&self, s: &mut ModuleSettings) {
        match self {
            Setting::Subscribe(v) => s.subscribe = v.clone(),
            Setting::SubscribeGroup(v) => s.subscribe_group = Some(v.clone()),
            Setting::Value(v) => s.rule.value = Some(v.clone()),
            Setting::Equals(v) => s.rule.equals = Some(v.clone()),
            _ => self.apply_copy(s),
        }
    }

    fn apply_copy(&self, s: &mut ModuleSettings) {
        match *self {
            Setting::Interval(v) => s.interval = v,
            Setting::Timeout(v) => s.timeout = v,
            Setting::MemoryLimit(v) => s.memory_limit = v,
            Setting::CpuLimit(v) => s.cpu_limit = v,
            Setting::FileLimit(v) => s.file_limit = v,
            Setting::ProcessLimit(v) => s.process_limit = v,
            Setting::OutputLimit(v) => s.output_limit = v,
            Setting::TriggerAfter(v) => s.trigger_after = v,
            Setting::Cooldown(v) => s.cooldown = v,
            Setting::Convention(v) => s.convention = v,
            Setting::RespondAt(v) => s.respond_at = v,
            Setting::Enabled(v) => s.enabled = v,
            Setting::DeviceClass(v) => s.device_class = v,
            Setting::Register(v) => s.rule.register = Some(v),
            Setting::Period(v) => s.rule.period = Some(v),
            Setting::By(v) => s.rule.by = Some(v),
            Setting::RegisterKeys(v) => s.rule.register_keys = Some(v),
            Setting::Above(v) => s.rule.above = Some(v),
            Setting::Below(v) => s.rule.below = Some(v),
            Setting::Subscribe(_)
            | Setting::SubscribeGroup(_)
            | Setting::Value(_)
            | Setting::Equals(_) => {}
        }
    }
}

/// Where and how events are forwarded: `broker`, `topic_prefix`, `client_id`,
/// `username`, `password_file`, `keepalive`, `max_inflight`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSettings {
    /// `host:port`, `[v6]:port` or `host` (port 1883), or several separated by
    /// one space (`brokers`); empty: no forwarding.
    pub broker: String,
    pub topic_prefix: String,
    /// Empty means `crd-<node>`.
    pub client_id: String,
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub keepalive: Duration,
    pub max_inflight: u16,
    /// `broker_tls`: TLS to the broker (needs the `tls` build).
    pub tls: bool,
    /// `ca_file`: PEM certificates the broker's chain must lead to.
    pub ca_file: PathBuf,
    /// `cert_file` and `key_file`: a client certificate, both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `homeassistant`: announce each scheduled module to Home Assistant's MQTT
    /// discovery as a `binary_sensor` on its state topic.
    pub homeassistant: bool,
    /// `homeassistant_prefix`: HA's discovery prefix.
    pub homeassistant_prefix: String,
    /// `homeassistant_status_topic`: where HA publishes its birth message
    /// (`online`), whatever its discovery prefix.
    pub homeassistant_status_topic: String,
    /// `homeassistant_support_url`: the `origin`'s `support_url` in every
    /// discovery config (an http(s) URL), for whoever ships crd to name
    /// their support page; none by default.
    pub homeassistant_support_url: Option<String>,
}

impl MqttSettings {
    /// The brokers of `broker`, in the order tried.
    pub fn brokers(&self) -> impl Iterator<Item = &str> {
        self.broker.split(' ').filter(|b| !b.is_empty())
    }
}

/// Default `ca_file`: where Debian and OpenWrt's `ca-bundle` keep the system roots.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            broker: String::new(),
            topic_prefix: "crd".into(),
            client_id: String::new(),
            username: String::new(),
            password_file: None,
            keepalive: Duration::from_secs(30),
            max_inflight: 20,
            tls: false,
            ca_file: PathBuf::from(DEFAULT_CA_FILE),
            cert_file: None,
            key_file: None,
            homeassistant: false,
            homeassistant_prefix: "homeassistant".into(),
            homeassistant_status_topic: "homeassistant/status".into(),
            homeassistant_support_url: None,
        }
    }
}

/// Largest `max_inflight`: the spool hands out at most this many unacked records.
pub const MAX_INFLIGHT_LIMIT: u16 = 1000;

/// Defaults for the paths; boards override them in their config file.
pub const DEFAULT_CONFIG: &str = "/etc/CRD/crd.conf";
pub const DEFAULT_MODULES_DIR: &str = "/opt/CRD/modules";
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/crd/spool";
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/crd.sock";
/// Default `install_max_size`: 8 MiB, a lot for a module of shell scripts and
/// little enough for the flash of a router.
pub const DEFAULT_INSTALL_MAX_SIZE: u64 = 8 << 20;
/// Largest accepted `max_parallel`: each run holds one pipe and one process group.
pub const MAX_PARALLEL_LIMIT: u32 = 256;
/// `metrics_interval`: by default Prometheus's own default scrape interval;
/// at least a second (a write a second is already more than a scrape reads),
/// at most an hour (Prometheus takes a series older than 5 minutes as gone:
/// a long interval suits only a slow scrape).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);
pub const MIN_METRICS_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_METRICS_INTERVAL: Duration = Duration::from_secs(3600);

impl Config {
    pub fn defaults(path: &Path) -> Config {
        Config {
            path: path.to_path_buf(),
            node: String::new(),
            modules_dir: PathBuf::from(DEFAULT_MODULES_DIR),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            max_parallel: 8,
            log_level: log::LevelFilter::Info,
            spool: SpoolConfig::default(),
            mqtt: MqttSettings::default(),
            repository: String::new(),
            install_max_size: DEFAULT_INSTALL_MAX_SIZE,
            max_message: DEFAULT_MAX_MESSAGE,
            max_hops: DEFAULT_MAX_HOPS,
            commands: Vec::new(),
            command_key_file: None,
            fleet_html: None,
            metrics_file: None,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            group_join_wait: None,
            defaults: ModuleSettings::default(),
            sections: Vec::new(),
        }
    }

    /// Where `key` of module `name`'s `[module NAME]` sections was set last:
    /// the line in this file, if a section sets it.
    pub fn section_line_of(&self, name: &str, key: &str) -> Option<u32> {
        self.sections
            .iter()
            .filter(|s| s.name == name)
            .flat_map(|s| s.set_at.iter())
            .filter(|(k, _)| *k == key)
            .map(|(_, l)| *l)
            .next_back()
    }

    /// The settings of module `name` given the overrides of its own `module.conf`.
    pub fn module_settings(&self, name: &str, own: &[Setting]) -> ModuleSettings {
        let mut s = self.defaults.clone();
        for o in own {
            o.apply(&mut s);
        }
        for sec in self.sections.iter().filter(|s| s.name == name) {
            for o in &sec.overrides {
                o.apply(&mut s);
            }
        }
        s
    }
}

/// A config problem, always with the file and line it was found at.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u32,
    pub key: Option<String>,
    pub msg: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

/// All errors found in one file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What is wrong with one line of a config file, or with the file: a `Reason`,
/// boxed so that a `Result` carrying it is one word wide and `?` moves a pointer.
/// `ConfigError` adds the file, the line and the key; `Display` writes the
/// one-line message users know.
#[derive(Debug)]
pub struct Problem(Box<Reason>);

impl Problem {
    pub fn reason(&self) -> &Reason {
        &self.0
    }
}

impl From<Reason> for Problem {
    fn from(r: Reason) -> Problem {
        Problem(Box::new(r))
    }
}

/// Why a value, a line or a file was refused; the value's text travels in the
/// variant, the words around it are `'static`.
#[derive(Debug)]
pub enum Reason {
    /// A value not of the forms its kind takes: the kind (`duration`, `broker`),
    /// the text, and the forms (or what the kind's check said).
    Bad(&'static str, String, &'static str),
    /// A duration or size whose unit is not one of these: the kind, the text, the
    /// units.
    BadUnit(&'static str, String, &'static str),
    /// A value that parses but lies beyond its key's bounds: the key (or kind),
    /// the text, and the bound in words (`is over 1h`).
    Beyond(&'static str, String, &'static str),
    /// A number not within `min..=max`.
    Number(String, u32, u32),
    /// A size not within `min..=max` bytes.
    SizeRange(String, u64, u64),
    /// A duration key that must not be zero.
    Zero(&'static str),
    CpuLimitTooLarge,
    /// A key only a build with the collector takes.
    NoCollector(&'static str),
    /// `broker_tls = yes` in a build without TLS.
    NoTls,
    /// A name, topic filter or group refused by its check: the kind, the text,
    /// why.
    BadName(&'static str, String, &'static str),
    #[cfg(feature = "collector")]
    NoFilters,
    #[cfg(feature = "collector")]
    TooManyFilters,
    /// A `value` path and what is wrong with it (one of the `Path*` reasons).
    #[cfg(feature = "collector")]
    ValuePath(String, Problem),
    #[cfg(feature = "collector")]
    PathTooLong,
    #[cfg(feature = "collector")]
    PathTooDeep,
    #[cfg(feature = "collector")]
    PathEmptyLevel,
    #[cfg(feature = "collector")]
    PathBadLevel(String),
    #[cfg(feature = "collector")]
    EqualsLength,
    EmptyPath,
    /// A rule key or `subscribe` among the global keys.
    PerModule(String),
    UnknownKey,
    /// A pattern among `commands`.
    CommandPattern(String),
    /// A bad name among `commands`, and why.
    CommandName(String, &'static str),
    /// The file's shape, or keys that must fit together.
    Shape(Shape),
}

/// What is wrong with the file's shape (lines, sections, a key set twice), with
/// keys that must fit together, or with reading it; the setting functions return
/// the other reasons.
#[derive(Debug)]
pub enum Shape {
    LineTooLong,
    /// A section header without its `]`: the line.
    Unclosed(String),
    MissingKey,
    /// A line that is neither a section, a comment nor `key = value`.
    NotAPair(String),
    /// A section other than `[module NAME]`: what is inside the brackets.
    UnknownSection(String),
    /// A second `[module NAME]`, and the line of the first.
    SectionAgain(String, u32),
    UnknownInSection,
    UnknownInModuleConf,
    /// A section header in a `module.conf`.
    SectionInModuleConf(String),
    /// A key set twice, and the line of the first.
    Duplicate(u32),
    /// `spool_size` below twice `spool_segment`: both.
    SpoolTooSmall(u64, u64),
    /// More segments than the spool takes: `spool_size`, `spool_segment`.
    TooManySegments(u64, u64),
    /// `spool_max_record` and framing over `spool_segment`: both.
    RecordTooLarge(u32, u64),
    CertWithoutKey,
    /// The file could not be read.
    Read(std::io::Error),
    /// `command_key_file` refused at `--check-config`, and why.
    CommandKey(String),
}

impl From<Shape> for Problem {
    fn from(s: Shape) -> Problem {
        Reason::Shape(s).into()
    }
}

/// Fixed texts are written as they are, `write!` only where a value goes in, its
/// arguments dereferenced (a `&&T` would add a formatting function of its own).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::Bad(what, v, hint) => write!(f, "bad {} `{}` ({})", *what, *v, *hint),
            Reason::BadUnit(what, v, units) => {
                write!(f, "bad {} unit in `{}` ({})", *what, *v, *units)
            }
            Reason::Beyond(key, v, bound) => write!(f, "{} `{}` {}", *key, *v, *bound),
            Reason::Number(v, min, max) => {
                write!(f, "bad number `{}` (want {}..={})", *v, *min, *max)
            }
            Reason::SizeRange(v, min, max) => {
                write!(f, "size `{}` out of range ({}..={} bytes)", *v, *min, *max)
            }
            Reason::Zero(what) => write!(f, "{} must be greater than zero", *what),
            Reason::CpuLimitTooLarge => f.write_str("cpu_limit too large"),
            Reason::NoCollector(key) => write!(
                f,
                "this crd is built without the collector (cargo feature `collector`, off in router builds); {} needs a collector build",
                *key
            ),
            Reason::NoTls => {
                f.write_str("this crd is built without TLS (cargo feature `tls`); use a TLS build")
            }
            Reason::BadName(what, v, why) => write!(f, "bad {} `{}`: {}", *what, *v, *why),
            #[cfg(feature = "collector")]
            Reason::NoFilters => f.write_str("subscribe needs at least one topic filter"),
            #[cfg(feature = "collector")]
            Reason::TooManyFilters => {
                write!(f, "more than {} topic filters", MAX_FILTERS_PER_MODULE)
            }
            #[cfg(feature = "collector")]
            Reason::ValuePath(v, why) => write!(f, "bad value path `{}`: {}", *v, *why),
            #[cfg(feature = "collector")]
            Reason::PathTooLong => write!(f, "longer than {} bytes", MAX_VALUE_PATH_BYTES),
            #[cfg(feature = "collector")]
            Reason::PathTooDeep => write!(f, "more than {} levels", MAX_VALUE_PATH_LEVELS),
            #[cfg(feature = "collector")]
            Reason::PathEmptyLevel => {
                f.write_str("an empty level (write `a.b`, or `.` for the whole payload)")
            }
            #[cfg(feature = "collector")]
            Reason::PathBadLevel(l) => {
                write!(f, "level `{}` has other than letters, digits, `_`, `-`", *l)
            }
            #[cfg(feature = "collector")]
            Reason::EqualsLength => write!(f, "equals must be 1..={} bytes", MAX_EQUALS_BYTES),
            Reason::EmptyPath => f.write_str("empty path"),
            Reason::PerModule(k) => write!(
                f,
                "{} is set per module (its module.conf, or a [module NAME] section)",
                *k
            ),
            Reason::UnknownKey => f.write_str("unknown key"),
            Reason::CommandPattern(n) => write!(
                f,
                "commands: `{}` is refused: name each support module a remote command may run",
                *n
            ),
            Reason::CommandName(n, why) => {
                write!(f, "commands: bad module name `{}`: {}", *n, *why)
            }
            Reason::Shape(s) => fmt::Display::fmt(s, f),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::LineTooLong => write!(f, "line longer than {} bytes", MAX_LINE_BYTES),
            Shape::Unclosed(l) => write!(f, "section header `{}` lacks a closing `]`", *l),
            Shape::MissingKey => f.write_str("missing key before `=`"),
            Shape::NotAPair(l) => write!(f, "expected `key = value`, found `{}`", *l),
            Shape::UnknownSection(s) => {
                write!(f, "unknown section `[{}]` (want [module NAME])", *s)
            }
            Shape::SectionAgain(name, line) => write!(
                f,
                "section [module {}] already opened at line {}",
                *name, *line
            ),
            Shape::UnknownInSection => f.write_str("unknown key in a [module] section"),
            Shape::UnknownInModuleConf => f.write_str("unknown key in module.conf"),
            Shape::SectionInModuleConf(s) => {
                write!(f, "sections are not allowed in module.conf: `[{}]`", *s)
            }
            Shape::Duplicate(first) => write!(f, "duplicate key (first set at line {})", *first),
            Shape::SpoolTooSmall(size, segment) => write!(
                f,
                "spool_size ({}) must be at least twice spool_segment ({}): a full spool drops one whole segment",
                *size, *segment
            ),
            Shape::TooManySegments(size, segment) => write!(
                f,
                "spool_size / spool_segment ({} / {}) makes {} segments; {} segments at most \
                 (raise spool_segment, up to {} bytes, or lower spool_size)",
                *size,
                *segment,
                size.div_ceil(*segment),
                MAX_SPOOL_SEGMENTS,
                MAX_SPOOL_SEGMENT_BYTES
            ),
            Shape::RecordTooLarge(max, segment) => write!(
                f,
                "spool_max_record ({}) plus framing does not fit in spool_segment ({})",
                *max, *segment
            ),
            Shape::CertWithoutKey => {
                f.write_str("cert_file and key_file go together (a client certificate and its key)")
            }
            Shape::Read(e) => fmt::Display::fmt(e, f),
            Shape::CommandKey(e) => write!(
                f,
                "{} (the daemon would run with remote commands off, and `crd send` would fail)",
                *e
            ),
        }
    }
}

impl std::error::Error for Problem {}

/// Longest `crd emit` topic suffix, in bytes.
pub const MAX_SUFFIX_BYTES: usize = 128;

/// A `crd emit` topic suffix: one or more `/`-separated levels of
/// `[A-Za-z0-9_.-]`, no empty level, at most 128 bytes; the first level is not one
/// crd publishes itself (`event`, `status`, `cmd`).
pub fn valid_topic_suffix(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("suffix is empty");
    }
    if s.len() > MAX_SUFFIX_BYTES {
        return Err("suffix is longer than 128 bytes");
    }
    for level in s.split('/') {
        if level.is_empty() {
            return Err("suffix has an empty topic level (leading, trailing or double `/`)");
        }
        if !level
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return Err("topic levels may hold only letters, digits, `_`, `.` and `-`");
        }
    }
    if matches!(
        s.split('/').next(),
        Some("event" | "status" | "cmd" | "state" | "reply" | "diag")
    ) {
        return Err("`event`, `status`, `state`, `cmd`, `reply` and `diag` are crd's own topics");
    }
    Ok(())
}

/// Whether `node` can be a node's name: one topic level.
pub fn valid_node(node: &str) -> Result<(), &'static str> {
    if node.is_empty()
        || node.len() > 128
        || !node
            .bytes()
            .all(|c| c.is_ascii_graphic() && !b"/+#".contains(&c))
    {
        return Err(
            "printable, no spaces, no `/`, `+`, `#`, at most 128 bytes: it is a topic level",
        );
    }
    Ok(())
}

/// A module or support-module name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes.
/// This rules out `/`, `..` as a whole name, and a leading `.`.
pub fn valid_name(name: &str) -> Result<(), &'static str> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err("name is empty");
    }
    if b.len() > MAX_NAME_BYTES {
        return Err("name is longer than 64 bytes");
    }
    if !b[0].is_ascii_alphanumeric() {
        return Err("name must start with a letter or digit");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err("name may hold only letters, digits, `_`, `.` and `-`");
    }
    Ok(())
}

/// Parses a duration: `500ms`, `30`, `30s`, `5m`, `1h`, `1d` (bare = seconds).
pub fn parse_duration(v: &str) -> Result<Duration, Problem> {
    let (num, unit) = split_unit(v);
    let n: u64 = num
        .parse()
        .map_err(|_| Reason::Bad("duration", v.into(), "want e.g. 500ms, 30, 30s, 5m, 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(Reason::BadUnit("duration", v.into(), "ms, s, m, h, d").into()),
    };
    // A ten-year bound keeps every `now + duration` far from Instant's overflow.
    match ms {
        Some(ms) if ms <= 10 * 365 * 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => Err(Reason::Beyond("duration", v.into(), "is too large (at most 10 years)").into()),
    }
}

/// Parses a size in bytes: `4096`, `4k`, `64M`, `1G` (binary units, case-insensitive).
pub fn parse_size(v: &str) -> Result<u64, Problem> {
    let (num, unit) = split_unit(v);
    let n: u64 = num
        .parse()
        .map_err(|_| Reason::Bad("size", v.into(), "want e.g. 4096, 4k, 64M, 1G"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(Reason::BadUnit("size", v.into(), "k, M, G").into()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| Reason::Beyond("size", v.into(), "is too large").into())
}

fn split_unit(v: &str) -> (&str, &str) {
    let i = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    (&v[..i], v[i..].trim())
}

fn parse_bool(v: &str) -> Result<bool, Problem> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(Reason::Bad("boolean", v.into(), "yes/no, true/false, on/off, 1/0").into()),
    }
}

fn parse_u32(v: &str, min: u32, max: u32) -> Result<u32, Problem> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Reason::Number(v.into(), min, max).into()),
    }
}

fn parse_u32_size(v: &str, min: u64, max: u64) -> Result<u32, Problem> {
    Ok(parse_size_in(v, min, max)? as u32)
}

/// Parses one per-module key; `Ok(None)` when the key is not a per-module key.
fn module_setting(key: &str, v: &str) -> Result<Option<Setting>, Problem> {
    let nonzero = |d: Duration, what: &'static str| {
        if d.is_zero() {
            Err(Problem::from(Reason::Zero(what)))
        } else {
            Ok(d)
        }
    };
    Ok(Some(match key {
        "interval" => Setting::Interval(nonzero(parse_duration(v)?, "interval")?),
        "timeout" => Setting::Timeout(nonzero(parse_duration(v)?, "timeout")?),
        // 1 MiB is below what any dynamically linked shell needs to start.
        "memory_limit" => Setting::MemoryLimit({
            let n = parse_size(v)?;
            if n < (1 << 20) {
                return Err(Reason::Beyond("memory_limit", v.into(), "is below 1M").into());
            }
            n
        }),
        "cpu_limit" => {
            let d = nonzero(parse_duration(v)?, "cpu_limit")?;
            // RLIMIT_CPU counts whole seconds; round up so 500ms still allows a run.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            Setting::CpuLimit(u32::try_from(secs).map_err(|_| Reason::CpuLimitTooLarge)?)
        }
        "file_limit" => Setting::FileLimit(parse_size(v)?),
        "process_limit" => Setting::ProcessLimit(parse_u32(v, 0, 1_000_000)?),
        "output_limit" => Setting::OutputLimit(parse_u32_size(v, 64, 1 << 20)?),
        "trigger_after" => Setting::TriggerAfter(parse_u32(v, 1, 1_000_000)?),
        "cooldown" => Setting::Cooldown(parse_duration(v)?),
        "convention" => Setting::Convention(match v {
            "exit" | "crd" => Convention::Exit,
            "nagios" => Convention::Nagios,
            _ => return Err(Reason::Bad("convention", v.into(), "exit or nagios").into()),
        }),
        "respond_at" => Setting::RespondAt(match v.to_ascii_lowercase().as_str() {
            "warning" | "1" => Severity::Warning,
            "critical" | "2" => Severity::Critical,
            _ => return Err(Reason::Bad("respond_at", v.into(), "warning or critical").into()),
        }),
        "enabled" => Setting::Enabled(parse_bool(v)?),
        "device_class" => {
            Setting::DeviceClass(HA_DEVICE_CLASSES.split(' ').find(|c| *c == v).ok_or_else(
                || {
                    Reason::Bad(
                        "device_class",
                        v.into(),
                        "a Home Assistant binary_sensor class: problem, connectivity, running, ...",
                    )
                },
            )?)
        }
        "subscribe" => Setting::Subscribe(subscribe_filters(v)?),
        "subscribe_group" => {
            topic::valid_group(v)
                .map_err(|why| Reason::BadName("subscribe_group", v.into(), why))?;
            Setting::SubscribeGroup(v.to_string())
        }
        "register" | "value" | "period" | "by" | "register_keys" | "above" | "below" | "equals" => {
            rule_setting(key, v)?
        }
        _ => return Ok(None),
    }))
}

/// `subscribe`'s topic filters.
#[cfg(feature = "collector")]
fn subscribe_filters(v: &str) -> Result<Vec<String>, Problem> {
    let filters: Vec<String> = v.split_whitespace().map(str::to_string).collect();
    if filters.is_empty() {
        return Err(Reason::NoFilters.into());
    }
    if filters.len() > MAX_FILTERS_PER_MODULE {
        return Err(Reason::TooManyFilters.into());
    }
    for f in &filters {
        topic::valid_filter(f).map_err(|why| Reason::BadName("topic filter", f.clone(), why))?;
        if f.starts_with("$share/") {
            return Err(Reason::BadName(
                "topic filter",
                f.clone(),
                "write the group as `subscribe_group`",
            )
            .into());
        }
    }
    Ok(filters)
}

/// Without the collector (a router's build) `subscribe` is refused, and the
/// reasons only the collector's keys give are not in the binary.
#[cfg(not(feature = "collector"))]
fn subscribe_filters(_: &str) -> Result<Vec<String>, Problem> {
    Err(Reason::NoCollector("subscribe").into())
}

/// Without the collector every rule key is refused (`key` is one of
/// `RULE_KEYS`).
#[cfg(not(feature = "collector"))]
fn rule_setting(key: &str, _: &str) -> Result<Setting, Problem> {
    let key = RULE_KEYS.iter().find(|k| **k == key).unwrap_or(&"register");
    Err(Reason::NoCollector(key).into())
}

/// `above` and `below`: within +-`MAX_REGISTER_VALUE`, the bound as
/// `{MAX_REGISTER_VALUE:e}` writes it (a test holds them equal; a float's
/// exponent formatting is not worth its bytes for one message).
#[cfg(feature = "collector")]
const REGISTER_VALUE_FORMS: &str = "a finite number within +-1e15";

/// Parses one of a rule module's keys.
#[cfg(feature = "collector")]
fn rule_setting(key: &str, v: &str) -> Result<Setting, Problem> {
    let number = |v: &str| -> Result<Num, Problem> {
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x.abs() <= MAX_REGISTER_VALUE => Ok(Num(x)),
            _ => Err(Reason::Bad("number", v.into(), REGISTER_VALUE_FORMS).into()),
        }
    };
    Ok(match key {
        "register" => Setting::Register(match v {
            "count" => RegisterKind::Count,
            "sum" => RegisterKind::Sum,
            "avg" => RegisterKind::Avg,
            "min" => RegisterKind::Min,
            "max" => RegisterKind::Max,
            "last" => RegisterKind::Last,
            "rate" => RegisterKind::Rate,
            _ => {
                return Err(Reason::Bad(
                    "register",
                    v.into(),
                    "count, sum, avg, min, max, last or rate",
                )
                .into());
            }
        }),
        "value" => {
            valid_value_path(v).map_err(|why| Reason::ValuePath(v.into(), why))?;
            Setting::Value(v.to_string())
        }
        "period" => {
            let d = parse_duration(v)?;
            if !(MIN_PERIOD..=MAX_PERIOD).contains(&d) {
                return Err(Reason::Beyond("period", v.into(), "out of range (1s..31d)").into());
            }
            Setting::Period(d)
        }
        "by" => Setting::By(match v {
            "node" => RegisterBy::Node,
            "topic" => RegisterBy::Topic,
            "module" => RegisterBy::Module,
            "all" => RegisterBy::All,
            _ => return Err(Reason::Bad("by", v.into(), "node, topic, module or all").into()),
        }),
        "register_keys" => Setting::RegisterKeys(parse_u32(v, 1, MAX_REGISTER_KEYS)?),
        "above" => Setting::Above(number(v)?),
        "below" => Setting::Below(number(v)?),
        _ => {
            if v.is_empty() || v.len() > MAX_EQUALS_BYTES {
                return Err(Reason::EqualsLength.into());
            }
            Setting::Equals(v.to_string())
        }
    })
}

/// A `value` path: `.` (the whole payload), or dotted levels of a JSON payload,
/// each letters, digits, `_` or `-` (a level of digits also indexes an array).
#[cfg(feature = "collector")]
pub fn valid_value_path(v: &str) -> Result<(), Problem> {
    if v == "." {
        return Ok(());
    }
    if v.len() > MAX_VALUE_PATH_BYTES {
        return Err(Reason::PathTooLong.into());
    }
    let levels: Vec<&str> = v.split('.').collect();
    if levels.len() > MAX_VALUE_PATH_LEVELS {
        return Err(Reason::PathTooDeep.into());
    }
    for l in levels {
        if l.is_empty() {
            return Err(Reason::PathEmptyLevel.into());
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Reason::PathBadLevel(l.into()).into());
        }
    }
    Ok(())
}

/// One meaningful line: a section header or a key/value pair.
enum Line<'a> {
    Section(&'a str),
    Pair(&'a str, &'a str),
}

/// Splits a file into numbered meaningful lines, reporting malformed ones.
fn lines<'a>(
    text: &'a str,
    err: &mut dyn FnMut(u32, Option<&str>, Problem),
) -> Vec<(u32, Line<'a>)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if raw.len() > MAX_LINE_BYTES {
            err(n, None, Shape::LineTooLong.into());
            continue;
        }
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(inner) => out.push((n, Line::Section(inner.trim()))),
                None => err(n, None, Shape::Unclosed(l.into()).into()),
            }
            continue;
        }
        match l.split_once('=') {
            Some((k, v)) => {
                let k = k.trim();
                let mut v = v.trim();
                if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                    v = &v[1..v.len() - 1];
                }
                if k.is_empty() {
                    err(n, None, Shape::MissingKey.into());
                } else {
                    out.push((n, Line::Pair(k, v)));
                }
            }
            None => err(n, None, Shape::NotAPair(l.into()).into()),
        }
    }
    out
}

/// Where a key line belongs while parsing `crd.conf`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Section(usize),
    /// A section header that was reported as an error.
    Rejected,
}

/// Parses `crd.conf`. `path` is only used in messages and kept in the result.
pub fn parse_config(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |line: u32, key: Option<&str>, msg: Problem| {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line,
            key: key.map(str::to_string),
            msg,
        })
    };
    let mut cfg = Config::defaults(path);
    // (scope, key, first line), for duplicate detection.
    let mut seen: Vec<(Scope, String, u32)> = Vec::new();
    let mut current = Scope::Global;
    let parsed = lines(text, &mut err);
    for (n, line) in parsed {
        match line {
            Line::Section(inner) => current = open_section(&mut cfg, inner, n, &mut err),
            Line::Pair(k, v) => {
                if let Some((_, _, first)) =
                    seen.iter().find(|(s, key, _)| *s == current && key == k)
                {
                    err(n, Some(k), Shape::Duplicate(*first).into());
                    continue;
                }
                seen.push((current, k.to_string(), n));
                match current {
                    // Keys of a rejected section are skipped, not applied globally.
                    Scope::Rejected => {}
                    Scope::Section(i) => section_setting(&mut cfg.sections[i], k, v, n, &mut err),
                    Scope::Global => {
                        if let Err(m) = global_setting(&mut cfg, k, v) {
                            err(n, Some(k), m);
                        }
                    }
                }
            }
        }
    }
    check_together(&cfg, &seen, &mut err);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Opens the section `[inner]` at line `n`: the scope of the keys that follow
/// (`Rejected` once its error is reported).
fn open_section(
    cfg: &mut Config,
    inner: &str,
    n: u32,
    err: &mut dyn FnMut(u32, Option<&str>, Problem),
) -> Scope {
    let mut words = inner.split_whitespace();
    let (Some("module"), Some(name), None) = (words.next(), words.next(), words.next()) else {
        err(n, None, Shape::UnknownSection(inner.into()).into());
        return Scope::Rejected;
    };
    if let Err(why) = valid_name(name) {
        err(
            n,
            None,
            Reason::BadName("module name", name.into(), why).into(),
        );
        return Scope::Rejected;
    }
    if let Some(prev) = cfg.sections.iter().find(|s| s.name == name) {
        err(n, None, Shape::SectionAgain(name.into(), prev.line).into());
        return Scope::Rejected;
    }
    cfg.sections.push(Section {
        name: name.to_string(),
        line: n,
        overrides: Vec::new(),
        set_at: Vec::new(),
    });
    Scope::Section(cfg.sections.len() - 1)
}

/// Adds `k = v` (line `n`) to a `[module NAME]` section's overrides.
fn section_setting(
    sec: &mut Section,
    k: &str,
    v: &str,
    n: u32,
    err: &mut dyn FnMut(u32, Option<&str>, Problem),
) {
    match module_setting(k, v) {
        Ok(Some(s)) => {
            sec.overrides.push(s);
            if let Some(k) = RULE_KEYS.iter().find(|r| **r == k) {
                sec.set_at.push((k, n));
            }
        }
        Ok(None) => err(n, Some(k), Shape::UnknownInSection.into()),
        Err(m) => err(n, Some(k), m),
    }
}

/// Checks the global keys that must fit together: the spool's sizes, and a client
/// certificate with its key. An error points at the first of the two keys that is
/// set (at line 0 when neither is, i.e. the defaults clash).
fn check_together(
    cfg: &Config,
    seen: &[(Scope, String, u32)],
    err: &mut dyn FnMut(u32, Option<&str>, Problem),
) {
    let blame = |a: &'static str, b: &'static str| {
        let line_of = |key: &str| {
            seen.iter()
                .find(|(s, k, _)| *s == Scope::Global && k == key)
                .map(|e| e.2)
        };
        match line_of(a) {
            Some(l) => (l, a),
            None => (line_of(b).unwrap_or(0), b),
        }
    };
    let sp = cfg.spool;
    if sp.size < 2 * sp.segment {
        let (line, key) = blame("spool_size", "spool_segment");
        err(
            line,
            Some(key),
            Shape::SpoolTooSmall(sp.size, sp.segment).into(),
        );
    }
    if sp.size.div_ceil(sp.segment) > MAX_SPOOL_SEGMENTS {
        let (line, key) = blame("spool_size", "spool_segment");
        err(
            line,
            Some(key),
            Shape::TooManySegments(sp.size, sp.segment).into(),
        );
    }
    let largest =
        (SPOOL_RECORD_HEADER_BYTES + sp.max_record as usize + SPOOL_SEGMENT_HEADER_BYTES) as u64;
    if largest > sp.segment {
        let (line, key) = blame("spool_max_record", "spool_segment");
        err(
            line,
            Some(key),
            Shape::RecordTooLarge(sp.max_record, sp.segment).into(),
        );
    }
    if cfg.mqtt.cert_file.is_some() != cfg.mqtt.key_file.is_some() {
        let (line, key) = blame("cert_file", "key_file");
        err(line, Some(key), Shape::CertWithoutKey.into());
    }
}

fn parse_size_in(v: &str, min: u64, max: u64) -> Result<u64, Problem> {
    let n = parse_size(v)?;
    if n < min || n > max {
        return Err(Reason::SizeRange(v.into(), min, max).into());
    }
    Ok(n)
}

/// A path key's value: a relative path is taken from the config file's
/// directory, not from wherever crd was started (children run in their module's
/// directory, so a path relative to crd's own directory would not hold for them).
fn config_relative(config: &Path, v: &str) -> Result<PathBuf, Problem> {
    if v.is_empty() {
        return Err(Reason::EmptyPath.into());
    }
    let v = Path::new(v);
    Ok(match config.parent() {
        Some(dir) if v.is_relative() => dir.join(v),
        _ => v.to_path_buf(),
    })
}

/// Applies one global key of `crd.conf`: a daemon, MQTT or spool key, or a
/// per-module key as every module's default.
fn global_setting(cfg: &mut Config, k: &str, v: &str) -> Result<(), Problem> {
    if k == "subscribe" || RULE_KEYS.contains(&k) {
        return Err(Reason::PerModule(k.into()).into());
    }
    if daemon_setting(cfg, k, v)? || mqtt_setting(cfg, k, v)? || spool_setting(cfg, k, v)? {
        return Ok(());
    }
    match module_setting(k, v)? {
        Some(s) => s.apply(&mut cfg.defaults),
        None => return Err(Reason::UnknownKey.into()),
    }
    Ok(())
}

/// The daemon's own keys: its node name, paths, limits, install repository,
/// remote commands, fleet page, metrics file and log level; `Ok(false)` for
/// any other key.
fn daemon_setting(cfg: &mut Config, k: &str, v: &str) -> Result<bool, Problem> {
    match k {
        "node" => {
            valid_node(v).map_err(|why| Reason::Bad("node", v.into(), why))?;
            cfg.node = v.to_string();
        }
        "modules_dir" => cfg.modules_dir = config_relative(&cfg.path, v)?,
        "spool_dir" => cfg.spool_dir = config_relative(&cfg.path, v)?,
        "control_socket" => cfg.control_socket = config_relative(&cfg.path, v)?,
        "repository" => {
            if v.is_empty() || v.starts_with('-') || v.contains(char::is_whitespace) {
                return Err(Reason::Bad(
                    "repository",
                    v.into(),
                    "a git URL, a directory, a .tar.gz, or an URL ending in `/`",
                )
                .into());
            }
            cfg.repository = v.to_string();
        }
        "install_max_size" => cfg.install_max_size = parse_size_in(v, 4 << 10, 1 << 30)?,
        "max_parallel" => cfg.max_parallel = parse_u32(v, 1, MAX_PARALLEL_LIMIT)?,
        "max_message" => cfg.max_message = parse_u32_size(v, 64, MAX_MESSAGE_LIMIT)?,
        "max_hops" => cfg.max_hops = parse_u32(v, 1, MAX_HOPS_LIMIT)?,
        "commands" => cfg.commands = command_names(v)?,
        "command_key_file" => cfg.command_key_file = Some(config_relative(&cfg.path, v)?),
        "fleet_html" => {
            if !cfg!(feature = "collector") {
                return Err(Reason::NoCollector("fleet_html").into());
            }
            cfg.fleet_html = Some(config_relative(&cfg.path, v)?);
        }
        "group_join_wait" => {
            if !cfg!(feature = "collector") {
                return Err(Reason::NoCollector("group_join_wait").into());
            }
            cfg.group_join_wait = Some(parse_duration(v)?);
        }
        "metrics_file" => cfg.metrics_file = Some(config_relative(&cfg.path, v)?),
        "metrics_interval" => {
            let d = parse_duration(v)?;
            if !(MIN_METRICS_INTERVAL..=MAX_METRICS_INTERVAL).contains(&d) {
                return Err(
                    Reason::Beyond("metrics_interval", v.into(), "out of range (1s..1h)").into(),
                );
            }
            cfg.metrics_interval = d;
        }
        "log_level" => cfg.log_level = log_level(v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `commands`: the support modules a remote command may run, each named (no
/// pattern), duplicates dropped.
fn command_names(v: &str) -> Result<Vec<String>, Problem> {
    let mut names = Vec::new();
    for n in v.split_whitespace() {
        if n.contains(['*', '?']) {
            return Err(Reason::CommandPattern(n.into()).into());
        }
        valid_name(n).map_err(|why| Reason::CommandName(n.into(), why))?;
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// `log_level`: `off`, `error`, `warn`, `info`, `debug` or `trace`, any case.
fn log_level(v: &str) -> Result<log::LevelFilter, Problem> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            return Err(
                Reason::Bad("log_level", v.into(), "error, warn, info, debug, trace").into(),
            );
        }
    })
}

/// Brokers a `broker` list may name.
pub const MAX_BROKERS: usize = 64;

/// `broker`: one `host:port` (`[v6]:port`, `v6`, `host`: port 1883) or several,
/// separated by spaces, each once; kept with one space between them.
fn broker_list(v: &str) -> Result<String, Problem> {
    let bad = |e: &str, why| Err(Reason::Bad("broker", e.into(), why).into());
    let list: Vec<&str> = v.split_whitespace().collect();
    if list.is_empty() {
        return bad(v, "want host:port, or several separated by spaces");
    }
    if list.len() > MAX_BROKERS {
        return bad(&format!("{} brokers", list.len()), "at most 64 brokers");
    }
    for (i, &b) in list.iter().enumerate() {
        if b.contains(',') || b.contains(';') {
            return bad(b, "separate the brokers of a list with spaces");
        }
        let bare_v6 = b.matches(':').count() > 1 && !b.starts_with('[');
        if let Some((host, port)) = b.rsplit_once(':').filter(|_| !bare_v6) {
            if host.is_empty() || host == "[]" {
                return bad(b, "want host:port");
            }
            if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                return bad(b, "a port from 1 to 65535");
            }
        }
        if list[..i].contains(&b) {
            return bad(b, "listed twice");
        }
    }
    Ok(list.join(" "))
}

/// `homeassistant_support_url`: it goes into JSON and HA shows it as a link,
/// so a plain web URL, `http://` or `https://` and no space or quote.
fn web_url(v: &str) -> Result<String, Problem> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    let plain = |c: char| !(c.is_whitespace() || c.is_control() || c == '"' || c == '\'');
    match rest {
        Some(r) if !r.is_empty() && r.chars().all(plain) => Ok(v.to_string()),
        _ => Err(Reason::Bad(
            "homeassistant_support_url",
            v.into(),
            "an http:// or https:// URL without spaces or quotes",
        )
        .into()),
    }
}

/// The broker connection's keys (`MqttSettings`); `Ok(false)` for any other key.
fn mqtt_setting(cfg: &mut Config, k: &str, v: &str) -> Result<bool, Problem> {
    let mqtt = &mut cfg.mqtt;
    match k {
        "broker" => mqtt.broker = broker_list(v)?,
        "topic_prefix" | "homeassistant_prefix" => {
            let (key, prefix) = if k == "topic_prefix" {
                ("topic_prefix", &mut mqtt.topic_prefix)
            } else {
                ("homeassistant_prefix", &mut mqtt.homeassistant_prefix)
            };
            if v.is_empty()
                || v.starts_with('/')
                || v.ends_with('/')
                || v.contains("//")
                || v.contains(|c: char| c == '+' || c == '#' || c.is_whitespace())
            {
                return Err(Reason::Bad(
                    key,
                    v.into(),
                    "topic levels without `+`, `#`, spaces or empty levels",
                )
                .into());
            }
            *prefix = v.to_string();
        }
        "homeassistant" => mqtt.homeassistant = parse_bool(v)?,
        "homeassistant_status_topic" => {
            topic::valid_topic(v)
                .map_err(|why| Reason::BadName("homeassistant_status_topic", v.into(), why))?;
            mqtt.homeassistant_status_topic = v.to_string();
        }
        "homeassistant_support_url" => mqtt.homeassistant_support_url = Some(web_url(v)?),
        "client_id" => {
            if v.is_empty() || v.len() > 64 {
                return Err(Reason::Bad("client_id", v.into(), "1..64 bytes").into());
            }
            mqtt.client_id = v.to_string();
        }
        "username" => mqtt.username = v.to_string(),
        "broker_tls" => {
            mqtt.tls = parse_bool(v)?;
            if mqtt.tls && !cfg!(feature = "tls") {
                return Err(Reason::NoTls.into());
            }
        }
        "ca_file" => mqtt.ca_file = config_relative(&cfg.path, v)?,
        "cert_file" => mqtt.cert_file = Some(config_relative(&cfg.path, v)?),
        "key_file" => mqtt.key_file = Some(config_relative(&cfg.path, v)?),
        "password_file" => mqtt.password_file = Some(config_relative(&cfg.path, v)?),
        "keepalive" => {
            let d = parse_duration(v)?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(65535) {
                return Err(
                    Reason::Beyond("keepalive", v.into(), "out of range (1s..65535s)").into(),
                );
            }
            mqtt.keepalive = d;
        }
        "max_inflight" => {
            mqtt.max_inflight = parse_u32(v, 1, u32::from(MAX_INFLIGHT_LIMIT))? as u16
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The spool's keys (`SpoolConfig`); `Ok(false)` for any other key.
fn spool_setting(cfg: &mut Config, k: &str, v: &str) -> Result<bool, Problem> {
    let sp = &mut cfg.spool;
    match k {
        "spool_size" => {
            sp.size = parse_size_in(v, 8 << 10, MAX_SPOOL_SEGMENTS * MAX_SPOOL_SEGMENT_BYTES)?
        }
        "spool_segment" => sp.segment = parse_size_in(v, 4 << 10, MAX_SPOOL_SEGMENT_BYTES)?,
        "spool_sync_bytes" => sp.sync_bytes = parse_size_in(v, 1, MAX_SPOOL_SEGMENT_BYTES)?,
        "spool_sync_interval" => {
            let d = parse_duration(v)?;
            if d > Duration::from_secs(3600) {
                return Err(Reason::Beyond("spool_sync_interval", v.into(), "is over 1h").into());
            }
            sp.sync_interval = d;
        }
        "spool_sync" => {
            sp.sync_always = match v {
                "always" => true,
                "group" => false,
                _ => return Err(Reason::Bad("spool_sync", v.into(), "always or group").into()),
            }
        }
        "spool_max_record" => {
            sp.max_record = parse_u32_size(v, 64, u64::from(SPOOL_RECORD_LIMIT_BYTES))?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses a module's own `module.conf`: per-module keys only, no sections.
/// `module.conf` may also carry descriptive metadata (`description`, `version`,
/// `min_crd_version`) for support modules; those are accepted and ignored here.
pub fn parse_module_conf(text: &str, path: &Path) -> Result<Vec<Setting>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |line: u32, key: Option<&str>, msg: Problem| {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line,
            key: key.map(str::to_string),
            msg,
        })
    };
    let mut out = Vec::new();
    let mut seen: Vec<(&str, u32)> = Vec::new();
    for (n, line) in lines(text, &mut err) {
        match line {
            Line::Section(s) => err(n, None, Shape::SectionInModuleConf(s.into()).into()),
            Line::Pair(k, v) => {
                if let Some((_, first)) = seen.iter().find(|(key, _)| *key == k) {
                    err(n, Some(k), Shape::Duplicate(*first).into());
                    continue;
                }
                seen.push((k, n));
                match module_setting(k, v) {
                    Ok(Some(s)) => out.push(s),
                    Ok(None) if matches!(k, "description" | "version" | "min_crd_version") => {}
                    Ok(None) => err(n, Some(k), Shape::UnknownInModuleConf.into()),
                    Err(m) => err(n, Some(k), m),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The last line of `text` (a `module.conf`, or `crd.conf` for a global key)
/// that sets `key`, if one does: the value in force.
pub fn key_line(text: &str, key: &str) -> Option<u32> {
    lines(text, &mut |_, _, _| {})
        .into_iter()
        .rfind(|(_, l)| matches!(l, Line::Pair(k, _) if *k == key))
        .map(|(n, _)| n)
}

/// The descriptive keys of a `module.conf`; empty strings when absent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModuleMeta {
    pub description: String,
    pub version: String,
    pub min_crd_version: String,
}

/// Reads the descriptive keys of a `module.conf` that `parse_module_conf` accepted.
pub fn module_meta(text: &str) -> ModuleMeta {
    let mut meta = ModuleMeta::default();
    for (_, line) in lines(text, &mut |_, _, _| {}) {
        if let Line::Pair(k, v) = line {
            match k {
                "description" => meta.description = v.to_string(),
                "version" => meta.version = v.to_string(),
                "min_crd_version" => meta.min_crd_version = v.to_string(),
                _ => {}
            }
        }
    }
    meta
}

/// Where a key may be set: `crd.conf`'s global keys, a module's settings
/// (`module.conf` or a `[module NAME]` section), or both (a global per-module key
/// is every module's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyScope {
    Global,
    Module,
    Both,
}

/// Which builds take a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBuilds {
    Every,
    /// Only a build with the collector; a router's build (no `collector` feature)
    /// refuses it with `Reason::NoCollector`.
    Collector,
}

/// One key the parser takes, for the readers that must list them all (the
/// OpenWrt init script's lists are held to this table by `tests/packaging.rs`).
/// Nothing in the daemon reads it, so it costs a router binary no bytes.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub scope: KeyScope,
    pub builds: KeyBuilds,
    /// Whether it takes several values separated by whitespace (a UCI `list`).
    pub list: bool,
    /// A value the parser takes (two values for a `list` key).
    pub sample: &'static str,
}

impl Key {
    /// Whether a router's build (no collector) takes it.
    pub fn router(&self) -> bool {
        self.builds == KeyBuilds::Every
    }
}

/// A `KEYS` row of a key that takes one value.
const fn one(name: &'static str, scope: KeyScope, builds: KeyBuilds, sample: &'static str) -> Key {
    Key {
        name,
        scope,
        builds,
        list: false,
        sample,
    }
}

/// A `KEYS` row of a key that takes several.
const fn many(name: &'static str, scope: KeyScope, builds: KeyBuilds, sample: &'static str) -> Key {
    Key {
        name,
        scope,
        builds,
        list: true,
        sample,
    }
}

/// Every key of `crd.conf` and `module.conf` (`module.conf`'s descriptive
/// `description`, `version` and `min_crd_version` aside: they set nothing). A
/// test holds it to the match arms of `daemon_setting`, `mqtt_setting`,
/// `spool_setting` and `module_setting`, both ways, and feeds the parser each
/// sample at each scope.
pub const KEYS: &[Key] = {
    use KeyBuilds::{Collector, Every};
    use KeyScope::{Both, Global, Module};
    &[
        // daemon_setting
        one("node", Global, Every, "edge-7"),
        one("modules_dir", Global, Every, "/opt/CRD/modules"),
        one("spool_dir", Global, Every, "/overlay/crd/spool"),
        one("control_socket", Global, Every, "/var/run/crd.sock"),
        one("repository", Global, Every, "https://example.org/crd/"),
        one("install_max_size", Global, Every, "8M"),
        one("max_parallel", Global, Every, "8"),
        one("max_message", Global, Every, "64k"),
        one("max_hops", Global, Every, "1"),
        many("commands", Global, Every, "Reboot Ping"),
        one("command_key_file", Global, Every, "/etc/crd/command.key"),
        one("fleet_html", Global, Collector, "/www/fleet.html"),
        one("group_join_wait", Global, Collector, "5m"),
        one("metrics_file", Global, Every, "/tmp/crd.prom"),
        one("metrics_interval", Global, Every, "15s"),
        one("log_level", Global, Every, "info"),
        // mqtt_setting
        many("broker", Global, Every, "192.0.2.1:1883 mqtt.example.org"),
        one("topic_prefix", Global, Every, "crd"),
        one("homeassistant_prefix", Global, Every, "homeassistant"),
        one("homeassistant", Global, Every, "yes"),
        one(
            "homeassistant_status_topic",
            Global,
            Every,
            "homeassistant/status",
        ),
        one(
            "homeassistant_support_url",
            Global,
            Every,
            "https://example.org/support",
        ),
        one("client_id", Global, Every, "crd-edge-7"),
        one("username", Global, Every, "edge"),
        one("broker_tls", Global, Every, "no"),
        one(
            "ca_file",
            Global,
            Every,
            "/etc/ssl/certs/ca-certificates.crt",
        ),
        one("cert_file", Global, Every, "/etc/crd/client.pem"),
        one("key_file", Global, Every, "/etc/crd/client.key"),
        one("password_file", Global, Every, "/etc/crd/password"),
        one("keepalive", Global, Every, "30s"),
        one("max_inflight", Global, Every, "20"),
        // spool_setting
        one("spool_size", Global, Every, "4M"),
        one("spool_segment", Global, Every, "256k"),
        one("spool_sync_bytes", Global, Every, "64k"),
        one("spool_sync_interval", Global, Every, "1s"),
        one("spool_sync", Global, Every, "group"),
        one("spool_max_record", Global, Every, "64k"),
        // module_setting
        one("interval", Both, Every, "30s"),
        one("device_class", Both, Every, "connectivity"),
        one("timeout", Both, Every, "10s"),
        one("memory_limit", Both, Every, "128M"),
        one("cpu_limit", Both, Every, "10s"),
        one("file_limit", Both, Every, "64M"),
        one("process_limit", Both, Every, "0"),
        one("output_limit", Both, Every, "4k"),
        one("trigger_after", Both, Every, "1"),
        one("cooldown", Both, Every, "1h"),
        one("convention", Both, Every, "exit"),
        one("respond_at", Both, Every, "critical"),
        one("enabled", Both, Every, "yes"),
        many("subscribe", Module, Collector, "crd/+/event/# crd/+/status"),
        one("subscribe_group", Both, Every, "central"),
        one("register", Module, Collector, "avg"),
        one("value", Module, Collector, "load"),
        one("period", Module, Collector, "5m"),
        one("by", Module, Collector, "node"),
        one("register_keys", Module, Collector, "10000"),
        one("above", Module, Collector, "3"),
        one("below", Module, Collector, "1"),
        one("equals", Module, Collector, "down"),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users saw when these were `format!`ed strings, byte for byte.
    #[test]
    fn messages_are_the_ones_users_know() {
        let s = String::from;
        let cases: Vec<(Problem, &str)> = vec![
            (
                Reason::Bad("duration", s("x"), "want e.g. 500ms, 30, 30s, 5m, 1h").into(),
                "bad duration `x` (want e.g. 500ms, 30, 30s, 5m, 1h)",
            ),
            (
                Reason::BadUnit("size", s("1q"), "k, M, G").into(),
                "bad size unit in `1q` (k, M, G)",
            ),
            (
                Reason::Beyond("spool_sync_interval", s("2h"), "is over 1h").into(),
                "spool_sync_interval `2h` is over 1h",
            ),
            (
                Reason::Number(s("0"), 1, 64).into(),
                "bad number `0` (want 1..=64)",
            ),
            (
                Reason::SizeRange(s("1"), 4096, 1 << 30).into(),
                "size `1` out of range (4096..=1073741824 bytes)",
            ),
            (
                Reason::Zero("interval").into(),
                "interval must be greater than zero",
            ),
            (Reason::CpuLimitTooLarge.into(), "cpu_limit too large"),
            (
                Reason::NoCollector("fleet_html").into(),
                "this crd is built without the collector (cargo feature `collector`, off in router builds); fleet_html needs a collector build",
            ),
            (
                Reason::NoTls.into(),
                "this crd is built without TLS (cargo feature `tls`); use a TLS build",
            ),
            (
                Reason::BadName("subscribe_group", s("a/b"), "why").into(),
                "bad subscribe_group `a/b`: why",
            ),
            (Reason::EmptyPath.into(), "empty path"),
            (
                Reason::PerModule(s("subscribe")).into(),
                "subscribe is set per module (its module.conf, or a [module NAME] section)",
            ),
            (Reason::UnknownKey.into(), "unknown key"),
            (
                Reason::CommandPattern(s("*")).into(),
                "commands: `*` is refused: name each support module a remote command may run",
            ),
            (
                Reason::CommandName(s("../x"), "why").into(),
                "commands: bad module name `../x`: why",
            ),
            (Shape::LineTooLong.into(), "line longer than 4096 bytes"),
            (
                Shape::Unclosed(s("[a")).into(),
                "section header `[a` lacks a closing `]`",
            ),
            (Shape::MissingKey.into(), "missing key before `=`"),
            (
                Shape::NotAPair(s("x")).into(),
                "expected `key = value`, found `x`",
            ),
            (
                Shape::UnknownSection(s("x y")).into(),
                "unknown section `[x y]` (want [module NAME])",
            ),
            (
                Shape::SectionAgain(s("a"), 3).into(),
                "section [module a] already opened at line 3",
            ),
            (
                Shape::UnknownInSection.into(),
                "unknown key in a [module] section",
            ),
            (
                Shape::UnknownInModuleConf.into(),
                "unknown key in module.conf",
            ),
            (
                Shape::SectionInModuleConf(s("x")).into(),
                "sections are not allowed in module.conf: `[x]`",
            ),
            (
                Shape::Duplicate(2).into(),
                "duplicate key (first set at line 2)",
            ),
            (
                Shape::SpoolTooSmall(8192, 8192).into(),
                "spool_size (8192) must be at least twice spool_segment (8192): a full spool drops one whole segment",
            ),
            (
                Shape::TooManySegments(8 << 30, 1 << 20).into(),
                "spool_size / spool_segment (8589934592 / 1048576) makes 8192 segments; 4096 segments at most \
                 (raise spool_segment, up to 2097152 bytes, or lower spool_size)",
            ),
            (
                Shape::RecordTooLarge(65536, 4096).into(),
                "spool_max_record (65536) plus framing does not fit in spool_segment (4096)",
            ),
            (
                Shape::CertWithoutKey.into(),
                "cert_file and key_file go together (a client certificate and its key)",
            ),
            (
                Shape::Read(std::io::Error::from(std::io::ErrorKind::NotFound)).into(),
                "entity not found",
            ),
            (
                Shape::CommandKey(s("k: mode 644")).into(),
                "k: mode 644 (the daemon would run with remote commands off, and `crd send` would fail)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// The same for the reasons only a build with the collector gives.
    #[cfg(feature = "collector")]
    #[test]
    fn collector_messages_are_the_ones_users_know() {
        let s = String::from;
        let cases: [(Problem, &str); 8] = [
            (
                Reason::NoFilters.into(),
                "subscribe needs at least one topic filter",
            ),
            (Reason::TooManyFilters.into(), "more than 16 topic filters"),
            (
                Reason::ValuePath(s("a..b"), Reason::PathEmptyLevel.into()).into(),
                "bad value path `a..b`: an empty level (write `a.b`, or `.` for the whole payload)",
            ),
            (Reason::PathTooLong.into(), "longer than 128 bytes"),
            (Reason::PathTooDeep.into(), "more than 16 levels"),
            (
                Reason::PathBadLevel(s("a b")).into(),
                "level `a b` has other than letters, digits, `_`, `-`",
            ),
            (Reason::EqualsLength.into(), "equals must be 1..=64 bytes"),
            (
                Reason::Bad("number", s("x"), REGISTER_VALUE_FORMS).into(),
                "bad number `x` (a finite number within +-1e15)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        assert_eq!(
            REGISTER_VALUE_FORMS,
            format!("a finite number within +-{MAX_REGISTER_VALUE:e}")
        );
    }

    #[test]
    fn module_meta_reads_the_descriptive_keys() {
        let m = module_meta("# c\ndescription = trims logs\nversion = 1.2\ntimeout = 1\n");
        assert_eq!(m.description, "trims logs");
        assert_eq!(m.version, "1.2");
        assert_eq!(m.min_crd_version, "");
    }

    #[test]
    fn tls_keys() {
        let c = p("cert_file = /c.pem\nkey_file = /k.pem\nca_file = /ca.pem\n").unwrap();
        assert_eq!(c.mqtt.ca_file, Path::new("/ca.pem"));
        assert_eq!(c.mqtt.cert_file.as_deref(), Some(Path::new("/c.pem")));
        let e = p("\ncert_file = /c.pem\n").unwrap_err().to_string();
        assert!(e.contains("crd.conf:2") && e.contains("go together"), "{e}");
        let tls = p("broker_tls = yes\n");
        if cfg!(feature = "tls") {
            assert!(tls.unwrap().mqtt.tls);
        } else {
            let e = tls.unwrap_err().to_string();
            assert!(
                e.contains("crd.conf:1") && e.contains("built without TLS"),
                "{e}"
            );
        }
    }

    #[test]
    fn repository_and_install_max_size_keys() {
        let c =
            p("repository = https://example.org/crd-modules/\ninstall_max_size = 1M\n").unwrap();
        assert_eq!(c.repository, "https://example.org/crd-modules/");
        assert_eq!(c.install_max_size, 1 << 20);
        let e = p("repository = -oops\ninstall_max_size = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("crd.conf:1") && e.contains("repository"), "{e}");
        assert!(
            e.contains("crd.conf:2") && e.contains("install_max_size"),
            "{e}"
        );
    }

    fn p(text: &str) -> Result<Config, ConfigErrors> {
        parse_config(text, Path::new("crd.conf"))
    }

    fn one_err(text: &str) -> String {
        let e = p(text).expect_err("config should be rejected");
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].to_string()
    }

    /// The keys of the top-level arms of the `match k {` (or `match key {`) in
    /// `fn NAME(` of this file's source: each arm's quoted strings before its
    /// `=>`, an or-pattern broken over lines included. Nested matches on values
    /// are indented deeper and left out.
    fn match_arm_keys(src: &str, name: &str) -> Vec<String> {
        let start = src
            .find(&format!("\nfn {name}("))
            .unwrap_or_else(|| panic!("fn {name} in config.rs"));
        let body = &src[start + 1..];
        let body = &body[..body.find("\n}\n").expect("the function's closing brace")];
        let indent = |l: &str| l.len() - l.trim_start().len();
        let on_key = |l: &&str| l.ends_with("match k {") || l.ends_with("match key {");
        let mut lines = body.lines();
        let m = lines
            .by_ref()
            .find(on_key)
            .unwrap_or_else(|| panic!("fn {name} matches on its key"));
        let arm = indent(m) + 4;
        let mut keys = Vec::new();
        let mut pattern: Option<String> = None;
        for l in lines {
            let t = l.trim();
            let starts = indent(l) == arm && (t.starts_with('"') || t.starts_with("| \""));
            if starts || pattern.is_some() {
                let p = pattern.get_or_insert_with(String::new);
                p.push_str(t);
                if let Some((head, _)) = p.split_once("=>") {
                    keys.extend(head.split('"').skip(1).step_by(2).map(str::to_string));
                    pattern = None;
                }
            }
        }
        keys
    }

    /// `KEYS` and the parser agree: the table's names are the match arms of the
    /// global setting functions and of `module_setting`, so a key added to the
    /// parser but not to the table (or the other way) fails here.
    #[test]
    fn the_keys_table_is_the_parsers_match_arms() {
        use std::collections::BTreeSet;
        let src = include_str!("config.rs");
        let parser = |fns: &[&str]| -> BTreeSet<String> {
            fns.iter().flat_map(|f| match_arm_keys(src, f)).collect()
        };
        let table = |global: bool| -> BTreeSet<String> {
            KEYS.iter()
                .filter(|k| (k.scope == KeyScope::Global) == global)
                .map(|k| k.name.to_string())
                .collect()
        };
        let agree = |what: &str, parser: BTreeSet<String>, table: BTreeSet<String>| {
            let unlisted: Vec<_> = parser.difference(&table).collect();
            let stray: Vec<_> = table.difference(&parser).collect();
            assert!(
                unlisted.is_empty() && stray.is_empty(),
                "{what}: parsed but not in KEYS {unlisted:?}; in KEYS but not parsed {stray:?}"
            );
        };
        agree(
            "global keys",
            parser(&["daemon_setting", "mqtt_setting", "spool_setting"]),
            table(true),
        );
        agree("per-module keys", parser(&["module_setting"]), table(false));
        let names: BTreeSet<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KEYS.len(), "a key listed twice");
        // The scanner itself: a nested match on values is not taken for keys.
        let planted = concat!(
            "\nfn f(k: &str) {\n",
            "    match k {\n",
            "        \"a\"\n",
            "        | \"b\" => match v {\n",
            "            \"x\" => 1,\n",
            "        },\n",
            "        \"c\" => 2,\n",
            "        _ => 3,\n",
            "    }\n",
            "}\n",
        );
        assert_eq!(match_arm_keys(planted, "f"), ["a", "b", "c"]);
    }

    /// Each key of `KEYS` with its sample, all at once at each place its scope
    /// allows, parses (a build without the collector refuses exactly the
    /// collector's keys, each with `NoCollector`); each is refused where its
    /// scope does not allow it; a key not in the table is unknown everywhere.
    #[test]
    fn every_key_is_taken_at_its_scope_and_refused_elsewhere() {
        let refused_here = |k: &Key| !cfg!(feature = "collector") && !k.router();
        let text = |keys: &[&Key]| -> String {
            keys.iter()
                .map(|k| format!("{} = {}\n", k.name, k.sample))
                .collect()
        };
        let errors = |r: Result<(), ConfigErrors>| -> Vec<(String, String)> {
            r.err().map_or(Vec::new(), |e| {
                e.0.iter()
                    .map(|e| (e.key.clone().unwrap_or_default(), e.msg.to_string()))
                    .collect()
            })
        };
        let no_collector = |keys: &[&Key]| -> Vec<(String, String)> {
            keys.iter()
                .filter(|k| refused_here(k))
                .map(|k| {
                    let m = Problem::from(Reason::NoCollector(k.name)).to_string();
                    (k.name.to_string(), m)
                })
                .collect()
        };
        let global: Vec<&Key> = KEYS
            .iter()
            .filter(|k| k.scope != KeyScope::Module)
            .collect();
        let module: Vec<&Key> = KEYS
            .iter()
            .filter(|k| k.scope != KeyScope::Global)
            .collect();
        assert_eq!(
            errors(p(&text(&global)).map(drop)),
            no_collector(&global),
            "crd.conf's global keys"
        );
        assert_eq!(
            errors(p(&format!("[module X]\n{}", text(&module))).map(drop)),
            no_collector(&module),
            "a [module NAME] section"
        );
        assert_eq!(
            errors(parse_module_conf(&text(&module), Path::new("module.conf")).map(drop)),
            no_collector(&module),
            "module.conf"
        );
        for k in KEYS {
            let line = format!("{} = {}\n", k.name, k.sample);
            match k.scope {
                KeyScope::Global => {
                    let in_section = one_err(&format!("[module X]\n{line}"));
                    let in_module_conf = parse_module_conf(&line, Path::new("module.conf"))
                        .expect_err(k.name)
                        .to_string();
                    assert!(
                        in_section.ends_with("unknown key in a [module] section"),
                        "{in_section}"
                    );
                    assert!(
                        in_module_conf.ends_with("unknown key in module.conf"),
                        "{in_module_conf}"
                    );
                }
                KeyScope::Module => {
                    assert!(one_err(&line).contains("is set per module"), "{}", k.name);
                }
                KeyScope::Both => {}
            }
            if k.list {
                assert!(k.sample.split_whitespace().count() > 1, "{}", k.name);
            }
        }
        assert!(!KEYS.iter().any(|k| k.name == "no_such_key"));
        assert!(one_err("no_such_key = 1\n").ends_with("unknown key"));
        assert!(
            one_err("[module X]\nno_such_key = 1\n").ends_with("unknown key in a [module] section")
        );
    }

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(p("").unwrap(), Config::defaults(Path::new("crd.conf")));
        assert_eq!(
            p("\n  \n# c\n   # c\n").unwrap().defaults,
            ModuleSettings::default()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("30").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("2d").ok(),
            Some(Duration::from_secs(172_800))
        );
        for bad in ["", "s", "-1", "1.5s", "3x", "99999999999999999999", "4000d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("4k").ok(), Some(4096));
        assert_eq!(parse_size("4K").ok(), Some(4096));
        assert_eq!(parse_size("64M").ok(), Some(64 << 20));
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("2MiB").ok(), Some(2 << 20));
        for bad in ["", "k", "1T", "-4k", "1.5M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globals_and_sections() {
        let c = p(
            "node = r1\ninterval = 5s\nmax_parallel = 8\nmodules_dir = /m\n\
                   spool_dir = /s\ncontrol_socket = /c.sock\nlog_level = debug\n\
                   timeout = 2s\nmemory_limit = 16M\ncpu_limit = 3\noutput_limit = 1k\n\
                   [module Disk]\ninterval = 1m\ntrigger_after = 3\ncooldown = 10m\n\
                   convention = nagios\nrespond_at = warning\nenabled = no\n",
        )
        .unwrap();
        assert_eq!(c.node, "r1");
        assert_eq!(c.max_parallel, 8);
        assert_eq!(c.modules_dir, PathBuf::from("/m"));
        assert_eq!(c.spool_dir, PathBuf::from("/s"));
        assert_eq!(c.control_socket, PathBuf::from("/c.sock"));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.defaults.interval, Duration::from_secs(5));
        assert_eq!(c.defaults.output_limit, 1024);
        let d = c.module_settings("Disk", &[]);
        assert_eq!(d.interval, Duration::from_secs(60));
        assert_eq!(d.timeout, Duration::from_secs(2));
        assert_eq!(d.memory_limit, 16 << 20);
        assert_eq!(d.cpu_limit, 3);
        assert_eq!(d.trigger_after, 3);
        assert_eq!(d.cooldown, Duration::from_secs(600));
        assert_eq!(d.convention, Convention::Nagios);
        assert_eq!(d.respond_at, Severity::Warning);
        assert!(!d.enabled);
        assert_eq!(
            c.module_settings("Other", &[]).interval,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn precedence_defaults_global_module_conf_section() {
        let c = p("interval = 5\ntimeout = 4\n[module M]\ntimeout = 3\n").unwrap();
        let own =
            parse_module_conf("interval = 7\ntimeout = 9\n", Path::new("module.conf")).unwrap();
        let s = c.module_settings("M", &own);
        assert_eq!(
            s.interval,
            Duration::from_secs(7),
            "module.conf beats global"
        );
        assert_eq!(
            s.timeout,
            Duration::from_secs(3),
            "crd.conf section beats module.conf"
        );
    }

    #[test]
    fn a_broker_list_is_tried_in_order_and_a_malformed_one_refused() {
        let c = p("broker = a.lan:1883  b.lan [::1]:1885 ::1\n").unwrap();
        assert_eq!(c.mqtt.broker, "a.lan:1883 b.lan [::1]:1885 ::1");
        let list: Vec<&str> = c.mqtt.brokers().collect();
        assert_eq!(list, ["a.lan:1883", "b.lan", "[::1]:1885", "::1"]);
        let e = one_err("node = r\nbroker = h1:1883,h2:1883\n");
        assert!(e.starts_with("crd.conf:2: "), "{e}");
        assert!(
            e.contains("`h1:1883,h2:1883`") && e.contains("spaces"),
            "{e}"
        );
        for (list, why) in [
            ("h1:1883 h1:1883", "listed twice"),
            ("h1:0", "a port from 1 to 65535"),
            ("h1:65536", "a port from 1 to 65535"),
            ("h1:x", "a port from 1 to 65535"),
            ("h1: h2", "a port from 1 to 65535"),
            (":1883", "want host:port"),
            ("h1:1883 , h2:1883", "spaces"),
        ] {
            let e = one_err(&format!("broker = {list}\n"));
            assert!(e.contains(why), "{list}: {e}");
        }
        let many: Vec<String> = (0..=MAX_BROKERS).map(|i| format!("h{i}:1883")).collect();
        let e = one_err(&format!("broker = {}\n", many.join(" ")));
        assert!(e.contains("`65 brokers` (at most 64 brokers)"), "{e}");
        let most = &many[..MAX_BROKERS];
        assert!(p(&format!("broker = {}\n", most.join(" "))).is_ok());
    }

    #[test]
    fn mqtt_keys() {
        let c = p(
            "broker = 127.0.0.1:1883\ntopic_prefix = fleet/eu\nclient_id = r1\n\
                   username = u\npassword_file = /etc/crd/pw\nkeepalive = 10s\nmax_inflight = 5\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.broker, "127.0.0.1:1883");
        assert_eq!(c.mqtt.topic_prefix, "fleet/eu");
        assert_eq!(c.mqtt.keepalive, Duration::from_secs(10));
        assert_eq!(c.mqtt.max_inflight, 5);
        assert_eq!(c.mqtt.password_file, Some(PathBuf::from("/etc/crd/pw")));
        assert_eq!(p("").unwrap().mqtt, MqttSettings::default());
        assert!(one_err("topic_prefix = a/#").contains("bad topic_prefix"));
        let c = p("homeassistant = yes\nhomeassistant_prefix = ha/x\n").unwrap();
        assert!(c.mqtt.homeassistant && c.mqtt.homeassistant_prefix == "ha/x");
        assert!(!p("").unwrap().mqtt.homeassistant, "off by default");
        assert!(one_err("homeassistant_prefix = a b").contains("bad homeassistant_prefix"));
        // HA's birth message goes to `homeassistant/status` whatever the
        // discovery prefix; a broker of several HA instances may move it.
        let c = p("homeassistant_prefix = ha/x\n").unwrap();
        assert_eq!(c.mqtt.homeassistant_status_topic, "homeassistant/status");
        let c = p("homeassistant_status_topic = ha/x/birth\n").unwrap();
        assert_eq!(c.mqtt.homeassistant_status_topic, "ha/x/birth");
        for bad in ["ha/+/status", "ha/#"] {
            let e = one_err(&format!("\n\nhomeassistant_status_topic = {bad}\n"));
            assert!(
                e.starts_with("crd.conf:3") && e.contains("homeassistant_status_topic"),
                "{e}"
            );
            assert!(e.contains("wildcard"), "{e}");
        }
        assert_eq!(p("").unwrap().mqtt.homeassistant_support_url, None);
        for good in ["https://example.org/crd", "http://10.0.0.1:8080/help?x=1"] {
            let c = p(&format!(
                "homeassistant_support_url = {good}
"
            ))
            .unwrap();
            assert_eq!(c.mqtt.homeassistant_support_url.as_deref(), Some(good));
        }
        for bad in [
            "example.org",
            "ftp://example.org",
            "https://",
            "https://a b",
            "https://a\"b",
            "https://a'b",
            "file:///etc/passwd",
        ] {
            let e = one_err(&format!("\n\nhomeassistant_support_url = {bad}\n"));
            assert!(
                e.starts_with("crd.conf:3") && e.contains("homeassistant_support_url"),
                "{bad}: {e}"
            );
        }
        assert!(one_err("max_inflight = 0").contains("bad number"));
        assert!(one_err("keepalive = 500ms").contains("out of range"));
    }

    #[test]
    fn topic_suffixes() {
        for ok in ["alerts", "wan/failover", "a.b-c_d/9"] {
            assert_eq!(valid_topic_suffix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/+", "#", "a b", "event/x", "status", "cmd", "state/x",
        ] {
            assert!(valid_topic_suffix(bad).is_err(), "{bad}");
        }
        assert!(valid_topic_suffix(&"a".repeat(129)).is_err());
    }

    #[test]
    fn spool_keys_and_their_cross_checks() {
        let c = p(
            "spool_size = 1M\nspool_segment = 64k\nspool_sync_bytes = 8k\n\
                   spool_sync_interval = 250ms\nspool_sync = always\nspool_max_record = 16k\n",
        )
        .unwrap();
        assert_eq!(
            c.spool,
            SpoolConfig {
                size: 1 << 20,
                segment: 64 << 10,
                sync_bytes: 8 << 10,
                sync_interval: Duration::from_millis(250),
                sync_always: true,
                max_record: 16 << 10,
            }
        );
        assert_eq!(p("").unwrap().spool, SpoolConfig::default());
        assert_eq!(
            one_err("spool_sync = sometimes"),
            "crd.conf:1: key `spool_sync`: bad spool_sync `sometimes` (always or group)"
        );
        assert!(one_err("\nspool_size = 300k").starts_with(
            "crd.conf:2: key `spool_size`: spool_size (307200) must be at least twice spool_segment"
        ));
        assert!(one_err("spool_segment = 4M").starts_with("crd.conf:1: key `spool_segment`"));
        assert!(one_err("spool_max_record = 1M\n").starts_with(
            "crd.conf:1: key `spool_max_record`: spool_max_record (1048576) plus framing"
        ));
        assert!(one_err("spool_max_record = 2M").contains("out of range"));
    }

    /// The spool's sizes are bounded together: `spool_size = 1023G` with 4 KiB
    /// segments would be a quarter of a billion segment entries, scanned per
    /// append, and the RAM kept while the disk fails (4 x max(spool_sync_bytes,
    /// spool_segment)) must stay within what a 32-bit router has.
    #[test]
    fn spool_bounds_a_small_router_cannot_honour_are_refused_with_their_line() {
        assert!(one_err("spool_size = 1023G").contains("out of range"));
        let e = one_err("# spool\nspool_size = 4G\nspool_segment = 128k\n");
        assert!(
            e.starts_with("crd.conf:2: key `spool_size`: spool_size / spool_segment")
                && e.contains("4096 segments at most"),
            "{e}"
        );
        assert!(
            one_err("spool_segment = 64M").contains("out of range"),
            "RAM bound"
        );
        assert!(
            one_err("spool_sync_bytes = 1G").contains("out of range"),
            "RAM bound"
        );
        // The largest allowed: 4096 segments of 2 MiB, 8 MiB of unsynced RAM.
        let c = p("spool_size = 8G\nspool_segment = 2M\nspool_sync_bytes = 2M\n").unwrap();
        assert_eq!(c.spool.unsynced_limit(), SPOOL_UNSYNCED_RAM_LIMIT_BYTES);
        assert!(one_err("spool_size = 8G\nspool_segment = 1M").contains("4096 segments at most"));
    }

    /// A rule module's register keys, each checked with its line, and
    /// what must fit together.
    #[test]
    fn register_keys_are_checked_with_their_line_and_together() {
        if !cfg!(feature = "collector") {
            assert!(one_err("[module X]\nregister = avg\n").contains("without the collector"));
            return;
        }
        let c = p(
            "[module Lb]\nsubscribe = crd/+/load\nregister = avg\nvalue = message\n\
                   period = 10s\nabove = 20\nby = node\nregister_keys = 500\n",
        )
        .unwrap();
        let s = c.module_settings("Lb", &[]);
        let r = &s.rule;
        assert_eq!(r.register, Some(RegisterKind::Avg));
        assert_eq!(r.value.as_deref(), Some("message"));
        assert_eq!(r.period, Some(Duration::from_secs(10)));
        assert_eq!(
            (r.above, r.by, r.register_keys),
            (Some(Num(20.0)), Some(RegisterBy::Node), Some(500))
        );
        assert_eq!(r.problem(true), None);
        for (text, want) in [
            (
                "register = median",
                "crd.conf:2: key `register`: bad register `median`",
            ),
            (
                "period = 0",
                "key `period`: period `0` out of range (1s..31d)",
            ),
            ("period = 3650d", "out of range (1s..31d)"),
            (
                "register_keys = 0",
                "key `register_keys`: bad number `0` (want 1..=100000)",
            ),
            ("above = NaN", "key `above`: bad number `NaN`"),
            ("below = inf", "bad number `inf`"),
            ("above = 1e308", "bad number `1e308`"),
            (
                "value = a..b",
                "key `value`: bad value path `a..b`: an empty level",
            ),
            ("value = message # a comment", "bad value path"),
            ("by = host", "bad by `host` (node, topic, module or all)"),
        ] {
            let e = one_err(&format!("[module X]\n{text}\n"));
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(one_err("register = avg\n").contains("per module"));
        let deep = vec!["a"; 17].join(".");
        assert!(one_err(&format!("[module X]\nvalue = {deep}\n")).contains("more than 16 levels"));
        // Keys that must fit together (the module is refused, naming them).
        let rule = |text: &str| {
            p(&format!("[module X]\n{text}\n"))
                .unwrap()
                .module_settings("X", &[])
                .rule
                .problem(true)
        };
        let problem = |text: &str| rule(text).unwrap_or_default();
        assert!(problem("above = 3").contains("`above` needs `register`"));
        assert!(problem("register = avg\nperiod = 1m").contains("needs `value`"));
        assert!(problem("register = sum\nvalue = x").contains("needs `period`"));
        assert!(problem("register = last\nvalue = x\nperiod = 1m").contains("drop `period`"));
        assert!(
            problem("register = max\nvalue = x\nperiod = 1m\nequals = up")
                .contains("`equals` is for")
        );
        assert!(
            problem("register = max\nvalue = x\nperiod = 1m\nabove = 1\nbelow = 0")
                .contains("one condition")
        );
        assert_eq!(rule("register = count\nperiod = 10m\nabove = 2"), None);
        assert_eq!(rule("register = last\nvalue = state\nequals = down"), None);
        let r = p("[module X]\nregister = count\nperiod = 1m\n").unwrap();
        assert!(
            r.module_settings("X", &[])
                .rule
                .problem(false)
                .unwrap()
                .contains("needs `subscribe`")
        );
    }

    /// A relative path key is taken from the config file's
    /// directory (children run in their module's directory, crd wherever it was
    /// started); an absolute one is kept.
    #[test]
    fn relative_paths_are_taken_from_the_config_files_directory() {
        let text = "modules_dir = m\nspool_dir = ./s\ncontrol_socket = /run/c.sock\n\
                    command_key_file = ../k\npassword_file = p\nca_file = c.pem\n";
        let c = parse_config(text, Path::new("/etc/crd/crd.conf")).unwrap();
        assert_eq!(c.modules_dir, Path::new("/etc/crd/m"));
        assert_eq!(c.spool_dir, Path::new("/etc/crd/./s"));
        assert_eq!(c.control_socket, Path::new("/run/c.sock"));
        assert_eq!(
            c.command_key_file.as_deref(),
            Some(Path::new("/etc/crd/../k"))
        );
        assert_eq!(
            c.mqtt.password_file.as_deref(),
            Some(Path::new("/etc/crd/p"))
        );
        assert_eq!(c.mqtt.ca_file, Path::new("/etc/crd/c.pem"));
        assert_eq!(key_line(text, "command_key_file"), Some(4));
        assert_eq!(key_line(text, "broker"), None);
        assert_eq!(key_line("a = 1\nb = 2\na = 3\n", "a"), Some(3), "the last");
    }

    /// `metrics_file` is a path like the others, taken from the config's
    /// directory, in every build; `metrics_interval` is 15 s unless set,
    /// within 1 s..1 h.
    #[test]
    fn metrics_file_is_config_relative_and_its_interval_bounded() {
        let d = p("").unwrap();
        assert_eq!(
            (d.metrics_file, d.metrics_interval),
            (None, Duration::from_secs(15))
        );
        let c = parse_config(
            "metrics_file = crd.prom\nmetrics_interval = 1s\n",
            Path::new("/etc/crd/crd.conf"),
        )
        .unwrap();
        assert_eq!(
            c.metrics_file.as_deref(),
            Some(Path::new("/etc/crd/crd.prom"))
        );
        assert_eq!(c.metrics_interval, Duration::from_secs(1));
        assert_eq!(
            p("metrics_interval = 1h\n").unwrap().metrics_interval,
            MAX_METRICS_INTERVAL
        );
        for bad in ["500ms", "61m"] {
            let e = one_err(&format!("\nmetrics_interval = {bad}\n"));
            assert!(
                e.contains("out of range (1s..1h)") && e.contains(":2"),
                "{e}"
            );
        }
        assert!(one_err("metrics_file = \n").contains("metrics_file"));
    }

    #[test]
    fn the_line_of_a_rule_key_is_found_in_a_section_or_a_module_conf() {
        if !cfg!(feature = "collector") {
            return;
        }
        let c = parse_config(
            "[module A]\nperiod = 1m\nregister = count\n[module B]\ntimeout = 1\n",
            Path::new("crd.conf"),
        )
        .unwrap();
        assert_eq!(c.section_line_of("A", "register"), Some(3));
        assert_eq!(c.section_line_of("B", "register"), None);
        assert_eq!(
            key_line("# x\nperiod = 1m\n\nregister = sum\n", "register"),
            Some(4)
        );
        assert_eq!(key_line("period = 1m\n", "register"), None);
        let r = RuleSettings {
            period: Some(Duration::from_secs(60)),
            ..RuleSettings::default()
        };
        assert_eq!(r.blamed_key(), "period");
        let r = RuleSettings {
            register: Some(RegisterKind::Count),
            ..r
        };
        assert_eq!(r.blamed_key(), "register");
    }

    /// Remote commands are off unless modules are named, one by one.
    #[test]
    fn commands_name_support_modules_and_refuse_wildcards() {
        let c = p("").unwrap();
        assert!(c.commands.is_empty() && c.command_key_file.is_none());
        let c = p("commands = Reboot  Ping Reboot\ncommand_key_file = /etc/CRD/cmd.key\n").unwrap();
        assert_eq!(c.commands, ["Reboot", "Ping"]);
        assert_eq!(c.command_key_file, Some(PathBuf::from("/etc/CRD/cmd.key")));
        let e = one_err("commands = Ping *\n");
        assert!(e.contains("`*` is refused") && e.contains(":1"), "{e}");
        let e = one_err("\ncommands = ../x\n");
        assert!(
            e.contains("bad module name `../x`") && e.contains(":2"),
            "{e}"
        );
    }

    /// The fleet page is a collector's.
    #[test]
    fn fleet_html_is_a_path_in_collector_builds() {
        if !cfg!(feature = "collector") {
            let e = one_err("\nfleet_html = /www/fleet.html\n");
            assert!(
                e.contains("fleet_html needs a collector build") && e.contains(":2"),
                "{e}"
            );
            return;
        }
        let c = p("fleet_html = /www/fleet.html\n").unwrap();
        assert_eq!(c.fleet_html, Some(PathBuf::from("/www/fleet.html")));
        assert_eq!(p("").unwrap().fleet_html, None);
    }

    /// Subscribed modules.
    #[test]
    fn subscribe_keys_are_topic_filters_checked_with_their_line() {
        if !cfg!(feature = "collector") {
            let e = one_err("[module X]\nsubscribe = a/+\n");
            assert!(e.contains("built without the collector"), "{e}");
            return;
        }
        let c = p(
            "subscribe_group = central\nmax_message = 16k\n[module Sink]\n\
                   subscribe = crd/+/event/# crd/+/status\n",
        )
        .unwrap();
        assert_eq!(c.max_message, 16 << 10);
        let s = c.module_settings("Sink", &[]);
        assert_eq!(s.subscribe, ["crd/+/event/#", "crd/+/status"]);
        assert_eq!(s.subscribe_group.as_deref(), Some("central"));
        assert!(c.module_settings("Other", &[]).subscribe.is_empty());
        let own = parse_module_conf(
            "subscribe = a/+\nsubscribe_group = g2\n",
            Path::new("module.conf"),
        )
        .unwrap();
        let s = c.module_settings("M", &own);
        assert_eq!(
            (s.subscribe, s.subscribe_group.as_deref()),
            (vec!["a/+".to_string()], Some("g2"))
        );
        let e = one_err("[module X]\nsubscribe = a/#/b\n");
        assert!(
            e.starts_with("crd.conf:2: key `subscribe`: bad topic filter `a/#/b`: `#` must be"),
            "{e}"
        );
        assert!(one_err("[module X]\nsubscribe = a+\n").contains("`+` must be a whole level"));
        assert!(one_err("[module X]\nsubscribe = $share/g/a\n").contains("subscribe_group"));
        assert!(one_err("subscribe = a\n").contains("per module"));
        assert!(one_err("subscribe_group = a/b\n").contains("bad subscribe_group"));
        assert!(one_err("max_message = 2M\n").contains("out of range"));
    }

    #[test]
    fn quoted_values_and_hash_inside_values() {
        let c = p("node = \"edge-1\"\nmodules_dir = /a#b\n").unwrap();
        assert_eq!(c.node, "edge-1");
        assert_eq!(c.modules_dir, PathBuf::from("/a#b"));
    }

    #[test]
    fn cpu_limit_rounds_up_to_whole_seconds() {
        assert_eq!(p("cpu_limit = 500ms").unwrap().defaults.cpu_limit, 1);
        assert_eq!(p("cpu_limit = 2m").unwrap().defaults.cpu_limit, 120);
    }

    #[test]
    fn every_error_names_file_line_and_key() {
        assert_eq!(one_err("\n\nfoo = 1"), "crd.conf:3: key `foo`: unknown key");
        assert_eq!(
            one_err("interval = 3x"),
            "crd.conf:1: key `interval`: bad duration unit in `3x` (ms, s, m, h, d)"
        );
        assert_eq!(
            one_err("interval = 0"),
            "crd.conf:1: key `interval`: interval must be greater than zero"
        );
        assert_eq!(
            one_err("timeout = 1\ntimeout = 2"),
            "crd.conf:2: key `timeout`: duplicate key (first set at line 1)"
        );
        assert_eq!(
            one_err("max_parallel = 0"),
            "crd.conf:1: key `max_parallel`: bad number `0` (want 1..=256)"
        );
        assert_eq!(
            one_err("memory_limit = 12q"),
            "crd.conf:1: key `memory_limit`: bad size unit in `12q` (k, M, G)"
        );
        assert_eq!(
            one_err("memory_limit = 512k"),
            "crd.conf:1: key `memory_limit`: memory_limit `512k` is below 1M"
        );
        assert_eq!(
            one_err("output_limit = 8"),
            "crd.conf:1: key `output_limit`: size `8` out of range (64..=1048576 bytes)"
        );
        assert_eq!(
            one_err("enabled = maybe"),
            "crd.conf:1: key `enabled`: bad boolean `maybe` (yes/no, true/false, on/off, 1/0)"
        );
        assert_eq!(
            one_err("convention = snmp"),
            "crd.conf:1: key `convention`: bad convention `snmp` (exit or nagios)"
        );
        assert_eq!(p("").unwrap().defaults.device_class, "problem");
        let c = p("device_class = connectivity\n[module Wan]\ndevice_class = running\n").unwrap();
        assert_eq!(c.defaults.device_class, "connectivity");
        assert_eq!(c.module_settings("Wan", &[]).device_class, "running");
        assert!(
            one_err("\ndevice_class = Problem")
                .starts_with("crd.conf:2: key `device_class`: bad device_class `Problem`"),
            "HA's classes are lowercase"
        );
        assert_eq!(
            one_err("respond_at = fatal"),
            "crd.conf:1: key `respond_at`: bad respond_at `fatal` (warning or critical)"
        );
        assert_eq!(
            one_err("trigger_after = 0"),
            "crd.conf:1: key `trigger_after`: bad number `0` (want 1..=1000000)"
        );
        assert_eq!(
            one_err("log_level = loud"),
            "crd.conf:1: key `log_level`: bad log_level `loud` (error, warn, info, debug, trace)"
        );
        assert!(one_err("node = a/b").starts_with("crd.conf:1: key `node`: bad node `a/b`"));
        assert_eq!(
            one_err("modules_dir ="),
            "crd.conf:1: key `modules_dir`: empty path"
        );
        assert_eq!(one_err("= 3"), "crd.conf:1: missing key before `=`");
        assert_eq!(
            one_err("just words"),
            "crd.conf:1: expected `key = value`, found `just words`"
        );
        assert_eq!(
            one_err("[module X"),
            "crd.conf:1: section header `[module X` lacks a closing `]`"
        );
        assert_eq!(
            one_err("[global]"),
            "crd.conf:1: unknown section `[global]` (want [module NAME])"
        );
        assert_eq!(
            one_err("[module ../etc]"),
            "crd.conf:1: bad module name `../etc`: name must start with a letter or digit"
        );
        assert_eq!(
            one_err("[module A]\n[module A]"),
            "crd.conf:2: section [module A] already opened at line 1"
        );
        assert_eq!(
            one_err("[module A]\nnode = x"),
            "crd.conf:2: key `node`: unknown key in a [module] section"
        );
        assert!(one_err(&"x".repeat(MAX_LINE_BYTES + 1)).contains("line longer than 4096 bytes"));
    }

    #[test]
    fn the_same_key_in_two_sections_is_not_a_duplicate() {
        let c = p("interval = 1\n[module A]\ninterval = 2\n[module B]\ninterval = 3\n").unwrap();
        assert_eq!(c.module_settings("A", &[]).interval, Duration::from_secs(2));
        assert_eq!(c.module_settings("B", &[]).interval, Duration::from_secs(3));
    }

    #[test]
    fn keys_of_a_rejected_section_are_not_applied_globally() {
        let e = p("[bogus]\ninterval = 1\n").unwrap_err();
        assert_eq!(e.0.len(), 1);
    }

    #[test]
    fn all_errors_are_reported_not_just_the_first() {
        let e = p("a = 1\ninterval = x\n\nb = 2\n").unwrap_err();
        let lines: Vec<u32> = e.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 4]);
    }

    #[test]
    fn module_conf_errors() {
        let mc = |t: &str| parse_module_conf(t, Path::new("m/module.conf"));
        assert_eq!(
            mc("description = trims logs\nversion = 1.2\ntimeout = 1")
                .unwrap()
                .len(),
            1
        );
        let e = mc("[module X]\nnode = y\ntimeout = 1\ntimeout = 2").unwrap_err();
        let s: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            s,
            vec![
                "m/module.conf:1: sections are not allowed in module.conf: `[module X]`",
                "m/module.conf:2: key `node`: unknown key in module.conf",
                "m/module.conf:4: key `timeout`: duplicate key (first set at line 3)",
            ]
        );
    }

    #[test]
    fn names() {
        for ok in ["A", "disk-full", "wan_down.v2", "0x", &"a".repeat(64)] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "-x",
            &"a".repeat(65),
            "é",
        ] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    /// Deterministic fuzz-style sweep: random lines built from config fragments never
    /// panic, and every error carries a line inside the file. (The coverage-guided
    /// fuzz target lives in `fuzz/`.)
    #[test]
    fn random_inputs_never_panic() {
        const FRAGS: &[&str] = &[
            "interval",
            "=",
            " ",
            "[",
            "]",
            "module",
            "#",
            "\"",
            "5",
            "ms",
            "k",
            "G",
            "\n",
            "node",
            "x",
            "..",
            "/",
            "timeout",
            "\u{0}",
            "é",
            "99999999999999999999",
            "\r\n",
            "convention",
            "nagios",
            "enabled",
            "yes",
        ];
        let mut seed: u32 = 0x1234_5678;
        let mut next = || {
            // xorshift32: deterministic, no dependency.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..20_000 {
            let n = next() % 24;
            let text: String = (0..n)
                .map(|_| FRAGS[(next() as usize) % FRAGS.len()])
                .collect();
            let total = text.lines().count() as u32;
            if let Err(e) = p(&text) {
                for e in &e.0 {
                    assert!(e.line >= 1 && e.line <= total.max(1), "{e} in {text:?}");
                }
            }
            let _ = parse_module_conf(&text, Path::new("m"));
        }
    }
}
