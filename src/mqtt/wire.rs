//! What crd puts on the wire, rendered without IO: an event's topic
//! (`<prefix>/<node>/event/<module>`, `<prefix>/<node>/<suffix>` for `crd emit`,
//! `<prefix>/<node>/reply/<id>` for a command's reply) and its JSON payload, and the retained status topic and payload. The forwarder
//! calls these per record with reused buffers.
//!
//! Every record carries its place in the stream (`"stream"`, `"seq"`; a
//! reply at the end of its own JSON), and `"prev"` where the spool's
//! numbering jumped before it, so a collector can check that none went
//! missing between the edge and itself (`collect::gaps`).

use crate::core::event::{Event, EventRef, Kind};
use crate::core::json::Obj;
use std::fmt::Write as _;

/// The retained status topic, `<prefix>/<node>/status`.
pub fn status_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/{node}/status")
}

/// The status payload: `{"state":..,"node":..,"stream":..,"version":..,"boot_ms":..}`,
/// and `"groups":[..]` when a collector names the groups it is a member of
/// (`collect::group`), then `"joining":true` while it is still joining them.
pub fn status_json(
    state: &str,
    node: &str,
    stream_hex: &str,
    boot_ms: u64,
    groups: &[String],
    joining: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    let mut o = Obj::new(&mut out);
    o.str("state", state)
        .str("node", node)
        .str("stream", stream_hex)
        .str("version", env!("CARGO_PKG_VERSION"))
        .uint("boot_ms", boot_ms);
    if !groups.is_empty() {
        o.strs("groups", groups);
        if joining {
            o.bool("joining", true);
        }
    }
    o.end();
    out
}

/// The retained diagnostics topic, `<prefix>/<node>/diag` (with
/// `homeassistant`): what the node's diagnostic sensors read. Never the
/// status topic, on which collectors run modules.
pub fn diag_topic(prefix: &str, node: &str) -> String {
    let mut t = String::with_capacity(prefix.len() + node.len() + 6);
    t.push_str(prefix);
    t.push('/');
    t.push_str(node);
    t.push_str("/diag");
    t
}

/// The diagnostics payload:
/// `{"backlog":N,"last_error":"MODULE: text","last_error_ms":MS}`, `backlog`
/// the spool's records the broker has not acknowledged, `last_error` the
/// last `error` event crd spooled (`""` and `null` until there is one).
pub fn diag_json(backlog: u64, last_error: Option<(&str, u64)>) -> Vec<u8> {
    let mut j = Vec::with_capacity(64 + last_error.map_or(0, |(t, _)| t.len()));
    let mut o = Obj::new(&mut j);
    o.uint("backlog", backlog);
    match last_error {
        Some((text, ms)) => o.str("last_error", text).uint("last_error_ms", ms),
        None => o.str("last_error", "").null("last_error_ms"),
    };
    o.end();
    j
}

/// The retained state topic of module `module`, `<prefix>/<node>/state/<module>`.
pub fn state_topic(prefix: &str, node: &str, module: &str) -> String {
    format!("{prefix}/{node}/state/{module}")
}

/// Most bytes of a run's output a module's retained state carries (HA shows
/// it as an attribute): the start of it, cut at a character boundary.
pub const STATE_OUT_BYTES: usize = 256;

/// The start of `out` a state carries: at most `STATE_OUT_BYTES`, whole
/// characters.
pub fn state_out(out: &str) -> &str {
    let mut n = out.len().min(STATE_OUT_BYTES);
    while !out.is_char_boundary(n) {
        n -= 1;
    }
    &out[..n]
}

/// A module's retained state:
/// `{"state":"ON"|"OFF","since":MS,"code":N,"seq":N,"out":".."}`, `since` the
/// unix ms of the change, `code` the exit code and `seq` the spool seq of the
/// `fired`/`cleared` event that made it (`null` where none did), `out` the
/// start of that run's output (`state_out`).
pub fn state_json(
    on: bool,
    since_ms: u64,
    code: Option<i32>,
    seq: Option<u64>,
    out: &str,
) -> Vec<u8> {
    let mut j = Vec::with_capacity(64 + out.len());
    let mut o = Obj::new(&mut j);
    o.str("state", if on { "ON" } else { "OFF" })
        .uint("since", since_ms);
    match code {
        Some(c) => o.int("code", i64::from(c)),
        None => o.null("code"),
    };
    match seq {
        Some(s) => o.uint("seq", s),
        None => o.null("seq"),
    };
    o.str("out", state_out(out)).end();
    j
}

/// Appends `s` in Home Assistant's id alphabet (`[A-Za-z0-9_-]`, what a
/// discovery topic level and a unique_id may hold), one to one: an ASCII letter
/// or digit as it is, `_` as `__`, every other byte (`-` and each byte of a
/// multibyte character too) as `_` and two lowercase hex digits. No code is
/// the start of another, so two names never give one id, and none holds `-`,
/// which is left to separate the parts of an id.
fn ha_escape(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push('_');
            if b == b'_' {
                out.push('_');
            } else {
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// Home Assistant's node id of a crd, `crd-<node>` (`ha_escape`): the
/// discovery topics' `<node_id>` level and the device's identifier, one per
/// node name.
pub fn ha_node_id(node: &str) -> String {
    let mut id = String::from("crd-");
    ha_escape(&mut id, node);
    id
}

/// One of the entities crd announces to Home Assistant, named by what it
/// shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEntity<'a> {
    /// A module's condition: a `binary_sensor` on its retained state topic.
    State(&'a str),
    /// A module's events (`fired`, `cleared`, `response`, `error`): an `event`
    /// entity on its event topic.
    Events(&'a str),
    /// Whether crd is connected (its retained status): a diagnostic
    /// `binary_sensor`, one per node.
    Connectivity,
    /// The spool's backlog (`diag_topic`): a diagnostic `sensor`, one per node.
    Backlog,
    /// The last error crd spooled (`diag_topic`): a diagnostic `sensor`, one
    /// per node.
    LastError,
}

/// The node's own entities (none of a module), each one config per node.
pub const HA_NODE_ENTITIES: [HaEntity<'static>; 3] = [
    HaEntity::Connectivity,
    HaEntity::Backlog,
    HaEntity::LastError,
];

impl HaEntity<'_> {
    /// HA's component, the discovery topic's second level.
    fn component(self) -> &'static str {
        match self {
            HaEntity::State(_) | HaEntity::Connectivity => "binary_sensor",
            HaEntity::Events(_) => "event",
            HaEntity::Backlog | HaEntity::LastError => "sensor",
        }
    }

    /// The part after the node id of a node's own entity (`-` and a word: no
    /// escaped module name holds a `-`), `None` for a module's.
    fn node_part(self) -> Option<&'static str> {
        match self {
            HaEntity::State(_) | HaEntity::Events(_) => None,
            HaEntity::Connectivity => Some("-status"),
            HaEntity::Backlog => Some("-backlog"),
            HaEntity::LastError => Some("-last-error"),
        }
    }
}

/// An entity's `unique_id`, in parts joined by `-` (no escaped name holds
/// one): `crd-<node>-<module>` for a module's state, `crd-<node>-<module>-event`
/// for its events, `crd-<node>--status` (no module: an empty part) for the
/// node's connectivity, `crd-<node>--backlog` and `crd-<node>--last-error`
/// for its diagnostic sensors; one per (node, entity).
pub fn ha_unique_id(node: &str, e: HaEntity<'_>) -> String {
    let mut id = ha_node_id(node);
    id.push('-');
    match e {
        HaEntity::State(m) => ha_escape(&mut id, m),
        HaEntity::Events(m) => {
            ha_escape(&mut id, m);
            id.push_str("-event");
        }
        e => id.push_str(e.node_part().unwrap_or_default()),
    }
    id
}

/// An entity's discovery topic, `<ha_prefix>/<component>/<node_id>/<object>/config`,
/// both id levels in HA's id alphabet (`ha_escape`): the object the module's
/// name, or for the node's own entities `crd-status`, `crd-backlog` and
/// `crd-last-error` (a `-`, which no escaped name holds). The node id level lets crd subscribe to its own
/// configs only.
pub fn ha_config_topic(ha_prefix: &str, node: &str, e: HaEntity<'_>) -> String {
    let mut t = String::with_capacity(ha_prefix.len() + 2 * node.len() + 40);
    t.push_str(ha_prefix);
    t.push('/');
    t.push_str(e.component());
    t.push('/');
    t.push_str(&ha_node_id(node));
    t.push('/');
    match e {
        HaEntity::State(m) | HaEntity::Events(m) => ha_escape(&mut t, m),
        e => {
            t.push_str("crd");
            t.push_str(e.node_part().unwrap_or_default());
        }
    }
    t.push_str("/config");
    t
}

/// The filter of every discovery config under this node's id,
/// `<ha_prefix>/+/<node_id>/+/config`: no other node's.
pub fn ha_own_configs(ha_prefix: &str, node: &str) -> String {
    let mut f = String::with_capacity(ha_prefix.len() + node.len() + 20);
    f.push_str(ha_prefix);
    f.push_str("/+/");
    f.push_str(&ha_node_id(node));
    f.push_str("/+/config");
    f
}

/// The board (or CPU architecture) HA shows as the device's model: `CRD_BOARD`
/// when cross/build.sh built it.
pub const MODEL: &str = match option_env!("CRD_BOARD") {
    Some(b) => b,
    None => std::env::consts::ARCH,
};

/// HA's template for `value_json.state`, rendering nothing (which HA skips
/// without a word) where the payload is not JSON: an emptied retained topic.
const HA_STATE_TEMPLATE: &str = "{{ value_json.state if value_json is defined else '' }}";

/// A module's state entity: a `binary_sensor` on its retained state topic
/// (`value_json.state`: ON/OFF, HA's defaults) of the module's
/// `device_class` (`core::config::HA_DEVICE_CLASSES`), with the state
/// JSON's members (`since`, `code`, `seq`, `out`) as its attributes
/// (`json_attributes_topic`), and what every entity has (`ha_common`).
pub fn ha_config_json(
    prefix: &str,
    node: &str,
    module: &str,
    device_class: &str,
    support_url: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(640);
    let mut o = Obj::new(&mut out);
    let state = state_topic(prefix, node, module);
    o.str("name", module)
        .str("unique_id", &ha_unique_id(node, HaEntity::State(module)))
        .str("state_topic", &state)
        .str("value_template", HA_STATE_TEMPLATE)
        .str("payload_on", "ON")
        .str("payload_off", "OFF")
        .str("device_class", device_class)
        .str("json_attributes_topic", &state);
    ha_available(&mut o, prefix, node);
    ha_common(&mut o, node, support_url);
    out
}

/// A module's events entity: an `event` on its event topic, HA's
/// `event_type` the event's `kind` and its `code`, `seq` and `out` the
/// event's attributes. HA reads one topic per event entity (its docs name no
/// wildcard for `state_topic`), so there is one per module, named after it.
pub fn ha_events_json(
    prefix: &str,
    node: &str,
    module: &str,
    support_url: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    let mut o = Obj::new(&mut out);
    let mut name = String::with_capacity(module.len() + 7);
    name.push_str(module);
    name.push_str(" events");
    let mut topic = String::with_capacity(prefix.len() + node.len() + module.len() + 8);
    topic.push_str(prefix);
    topic.push('/');
    topic.push_str(node);
    topic.push_str("/event/");
    topic.push_str(module);
    o.str("name", &name)
        .str("unique_id", &ha_unique_id(node, HaEntity::Events(module)))
        .str("state_topic", &topic)
        .str("value_template", HA_EVENT_TEMPLATE)
        .strs("event_types", &KINDS.map(String::from));
    ha_available(&mut o, prefix, node);
    ha_common(&mut o, node, support_url);
    out
}

/// The node's connectivity: a diagnostic (`entity_category`) `binary_sensor`
/// of class `connectivity`, ON while crd's retained status says `online`,
/// with the status JSON's members (version, boot_ms, stream, seq) as
/// attributes. It has no availability: offline is its OFF.
pub fn ha_connectivity_json(prefix: &str, node: &str, support_url: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(640);
    let mut o = Obj::new(&mut out);
    let status = status_topic(prefix, node);
    o.str("name", "crd")
        .str("unique_id", &ha_unique_id(node, HaEntity::Connectivity))
        .str("state_topic", &status)
        .str("value_template", HA_ONLINE_TEMPLATE)
        .str("device_class", "connectivity")
        .str("entity_category", "diagnostic")
        .str("json_attributes_topic", &status);
    ha_common(&mut o, node, support_url);
    out
}

/// One of the node's diagnostic sensors (`HaEntity::Backlog` or
/// `HaEntity::LastError`), both on the diagnostics topic (`diag_topic`):
/// the backlog a measurement in `events`, the last error its text (`none`
/// until there is one) with the diagnostics JSON's members as attributes.
/// Available while crd's status says `online`: the topic is published only
/// while connected, so it says nothing new while crd is away.
pub fn ha_diag_json(
    prefix: &str,
    node: &str,
    e: HaEntity<'_>,
    support_url: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(720);
    let mut o = Obj::new(&mut out);
    let diag = diag_topic(prefix, node);
    let backlog = e == HaEntity::Backlog;
    o.str(
        "name",
        if backlog {
            "spool backlog"
        } else {
            "last error"
        },
    )
    .str("unique_id", &ha_unique_id(node, e))
    .str("state_topic", &diag)
    .str(
        "value_template",
        if backlog {
            HA_BACKLOG_TEMPLATE
        } else {
            HA_LAST_ERROR_TEMPLATE
        },
    )
    .str("entity_category", "diagnostic");
    if backlog {
        o.str("state_class", "measurement")
            .str("unit_of_measurement", "events");
    } else {
        o.str("json_attributes_topic", &diag);
    }
    ha_available(&mut o, prefix, node);
    ha_common(&mut o, node, support_url);
    out
}

/// HA's templates from the diagnostics JSON (`diag_json`) to the backlog and
/// to the last error, rendering nothing where the payload is not JSON.
const HA_BACKLOG_TEMPLATE: &str = "{{ value_json.backlog if value_json is defined else '' }}";
const HA_LAST_ERROR_TEMPLATE: &str =
    "{{ (value_json.last_error or 'none') if value_json is defined else '' }}";

/// HA's template from crd's status JSON to ON (online) or OFF.
const HA_ONLINE_TEMPLATE: &str = "{{ ('ON' if value_json.state == 'online' else 'OFF') \
    if value_json is defined else '' }}";

/// The kinds of event on a module's event topic, HA's `event_types`.
const KINDS: [&str; 4] = ["fired", "cleared", "response", "error"];

/// HA's template from an event's JSON to its event: `kind` as `event_type`.
const HA_EVENT_TEMPLATE: &str = "{{ {'event_type': value_json.kind, 'code': value_json.code, \
    'seq': value_json.seq, 'out': value_json.out} | to_json if value_json is defined else '' }}";

/// A module's entity is available while crd's retained status says
/// `online` (`value_json.state` of the status JSON, `HA_STATE_TEMPLATE`).
fn ha_available(o: &mut Obj<'_>, prefix: &str, node: &str) {
    o.str("availability_topic", &status_topic(prefix, node))
        .str("availability_template", HA_STATE_TEMPLATE)
        .str("payload_available", "online")
        .str("payload_not_available", "offline");
}

/// What every entity's config has, and closes it with: one device per node,
/// and the origin (crd, its version and `homeassistant_support_url` when
/// set: Cargo.toml names no repository, whoever ships crd names theirs).
fn ha_common(o: &mut Obj<'_>, node: &str, support_url: Option<&str>) {
    let v = env!("CARGO_PKG_VERSION");
    let mut d = o.obj("device");
    d.strs("identifiers", &[ha_node_id(node)])
        .str("name", node)
        .str("model", MODEL)
        .str("sw_version", v)
        .str("manufacturer", "crd")
        .end();
    let mut origin = o.obj("origin");
    origin.str("name", "crd").str("sw_version", v);
    if let Some(u) = support_url {
        origin.str("support_url", u);
    }
    origin.end();
    o.end();
}

/// The topic and JSON payload of spool record `seq` holding `ev`: `seq` is
/// the record's seq and, where the spool's numbering jumped before it
/// (records dropped, the rest of a lease after an unclean stop), the seq
/// before it (`"prev"`): the ones between were never sent.
pub fn render(
    prefix: &str,
    node: &str,
    stream_hex: &str,
    seq: (u64, Option<u64>),
    ev: &Event,
) -> (String, Vec<u8>) {
    let (mut topic, mut json) = (String::new(), Vec::new());
    render_into(
        prefix,
        node,
        stream_hex,
        seq,
        &ev.as_ref(),
        &mut topic,
        &mut json,
    );
    (topic, json)
}

/// `render` into reused buffers (cleared first): no allocation per record once
/// they have grown.
pub fn render_into(
    prefix: &str,
    node: &str,
    stream_hex: &str,
    (seq, prev): (u64, Option<u64>),
    ev: &EventRef<'_>,
    topic: &mut String,
    json: &mut Vec<u8>,
) {
    let emit = ev.kind == Kind::Emit;
    topic.clear();
    if ev.kind == Kind::Reply {
        let _ = write!(topic, "{prefix}/{node}/reply/{}", ev.module);
        json.clear();
        json.extend_from_slice(ev.out.as_bytes());
        // The reply's JSON as it was made, and its place in the stream.
        if ev.out.ends_with('}') {
            let mut o = Obj::reopen(json);
            o.str("stream", stream_hex).uint("seq", seq);
            if let Some(p) = prev {
                o.uint("prev", p);
            }
            o.end();
        }
        return;
    }
    // The slashes pushed, not copied: a copy of a length not known when
    // compiling calls musl's memcpy.
    topic.push_str(prefix);
    topic.push('/');
    topic.push_str(node);
    topic.push('/');
    if !emit {
        topic.push_str("event/");
    }
    topic.push_str(ev.module);
    json.clear();
    let mut o = Obj::new(json);
    o.str("node", node)
        .str("stream", stream_hex)
        .uint("seq", seq);
    if let Some(p) = prev {
        o.uint("prev", p);
    }
    o.uint("ts", ev.ts_ms)
        .str("module", ev.module)
        .str("kind", ev.kind.as_str())
        .int("code", i64::from(ev.code))
        .uint("dur_ms", u64::from(ev.dur_ms))
        .str(if emit { "message" } else { "out" }, ev.out);
    // A collector's run of a message: how far from an event no message caused,
    // and whose message (collectors run nothing at `max_hops`).
    if let Some((hop, of)) = ev.cause {
        o.uint("hop", u64::from(hop)).str("cause", of);
    }
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_emits_render_to_their_topics_as_json() {
        let ev = Event {
            ts_ms: 5,
            module: "Disk".into(),
            kind: Kind::Fired,
            code: 0,
            dur_ms: 7,
            out: "97% \"full\"".into(),
            cause: None,
        };
        let (t, j) = render("crd", "r1", "00000000000000ab", (42, None), &ev);
        assert_eq!(t, "crd/r1/event/Disk");
        let run = Event {
            cause: crate::core::event::Cause::new(2, "n0/00000000000000cd/7"),
            ..ev.clone()
        };
        let (_, jr) = render("crd", "r1", "00000000000000ab", (43, None), &run);
        assert!(
            jr.ends_with(br#","out":"97% \"full\"","hop":2,"cause":"n0/00000000000000cd/7"}"#),
            "{}",
            String::from_utf8_lossy(&jr)
        );
        assert_eq!(
            String::from_utf8(j).unwrap(),
            r#"{"node":"r1","stream":"00000000000000ab","seq":42,"ts":5,"module":"Disk","kind":"fired","code":0,"dur_ms":7,"out":"97% \"full\""}"#
        );
        let em = Event {
            kind: Kind::Emit,
            module: "alerts/wan".into(),
            out: "down".into(),
            ..ev
        };
        let rep = Event {
            kind: Kind::Reply,
            module: "0123abcd".into(),
            out: r#"{"id":"0123abcd","reply":"accepted"}"#.into(),
            ..em.clone()
        };
        let (t, j) = render("crd", "r1", "ab", (44, None), &rep);
        assert_eq!(t, "crd/r1/reply/0123abcd");
        assert_eq!(
            String::from_utf8(j).unwrap(),
            r#"{"id":"0123abcd","reply":"accepted","stream":"ab","seq":44}"#,
            "a reply goes out as it was made, with its place in the stream"
        );
        let (_, j) = render("crd", "r1", "ab", (70_000, Some(44)), &rep);
        assert!(j.ends_with(br#","seq":70000,"prev":44}"#));
        let fired = Event {
            kind: Kind::Fired,
            ..rep.clone()
        };
        let (_, j) = render("crd", "r1", "ab", (70_000, Some(44)), &fired);
        let j = String::from_utf8(j).unwrap();
        assert!(
            j.starts_with(r#"{"node":"r1","stream":"ab","seq":70000,"prev":44,"ts":5,"#),
            "a jump in the numbering says the seq before it: {j}"
        );
        let (t, j) = render("fleet/eu", "r1", "ab", (43, None), &em);
        assert_eq!(t, "fleet/eu/r1/alerts/wan");
        let j = String::from_utf8(j).unwrap();
        assert!(
            j.contains(r#""kind":"emit""#)
                && j.contains(r#""message":"down""#)
                && !j.contains("\"out\""),
            "{j}"
        );
    }

    #[test]
    fn home_assistant_ids_hold_only_what_its_topics_allow() {
        assert_eq!(ha_unique_id("r1", HaEntity::State("Disk")), "crd-r1-Disk");
        assert_eq!(
            ha_unique_id("gw.lan", HaEntity::State("Wan_Down")),
            "crd-gw_2elan-Wan__Down"
        );
        assert_eq!(
            ha_unique_id("é", HaEntity::State("a-b")),
            "crd-_c3_a9-a_2db"
        );
        assert_eq!(ha_node_id("gw.lan"), "crd-gw_2elan");
        assert_eq!(
            ha_config_topic("ha", "gw.lan", HaEntity::State("Wan.Down")),
            "ha/binary_sensor/crd-gw_2elan/Wan_2eDown/config"
        );
        let c: serde_json::Value = serde_json::from_slice(&ha_config_json(
            "crd", "gw.lan", "Wan.Down", "problem", None,
        ))
        .unwrap();
        assert_eq!(c["unique_id"], "crd-gw_2elan-Wan_2eDown");
        assert_eq!(c["name"], "Wan.Down", "the name as it is");
        assert_eq!(c["device"]["identifiers"][0], "crd-gw_2elan");
        assert_eq!(c["state_topic"], "crd/gw.lan/state/Wan.Down");
        assert_eq!(c["device_class"], "problem");
        assert_eq!(c["json_attributes_topic"], c["state_topic"]);
    }

    #[test]
    fn home_assistant_templates_render_nothing_for_a_payload_that_is_not_json() {
        let c: serde_json::Value =
            serde_json::from_slice(&ha_config_json("crd", "r1", "Disk", "problem", None)).unwrap();
        for t in ["value_template", "availability_template"] {
            assert_eq!(
                c[t], "{{ value_json.state if value_json is defined else '' }}",
                "{t}"
            );
        }
    }

    /// The discovery topic, unique_id and device identifier of an entity, as
    /// HA would key them (the last two read from its config).
    fn entity_keys(node: &str, e: HaEntity<'_>) -> (String, String, String) {
        let c = match e {
            HaEntity::State(m) => ha_config_json("crd", node, m, "problem", None),
            HaEntity::Events(m) => ha_events_json("crd", node, m, None),
            HaEntity::Connectivity => ha_connectivity_json("crd", node, None),
            e => ha_diag_json("crd", node, e, None),
        };
        let c: serde_json::Value = serde_json::from_slice(&c).unwrap();
        let uid = c["unique_id"].as_str().unwrap().to_string();
        let dev = c["device"]["identifiers"][0].as_str().unwrap().to_string();
        (ha_config_topic("homeassistant", node, e), uid, dev)
    }

    /// `entity_keys` of a module's state entity.
    fn ha_keys(node: &str, module: &str) -> (String, String, String) {
        entity_keys(node, HaEntity::State(module))
    }

    #[test]
    fn a_dot_and_an_underscore_in_a_module_name_are_two_entities() {
        let (a, b) = (ha_keys("gw.lan", "Wan.Down"), ha_keys("gw.lan", "Wan_Down"));
        assert_ne!(a.0, b.0, "one discovery topic");
        assert_ne!(a.1, b.1, "one unique_id");
        assert_eq!(a.2, b.2, "one device: one node");
    }

    #[test]
    fn an_underscore_does_not_move_between_node_and_module() {
        let (a, b) = (ha_keys("a_b", "c"), ha_keys("a", "b_c"));
        assert_ne!(a.0, b.0, "one discovery topic");
        assert_ne!(a.1, b.1, "one unique_id");
    }

    #[test]
    fn nodes_gw_dot_lan_and_gw_underscore_lan_are_two_devices() {
        assert_ne!(ha_keys("gw.lan", "m").2, ha_keys("gw_lan", "m").2);
        assert_ne!(ha_keys("gw.lan", "m").0, ha_keys("gw_lan", "m").0);
        let own = ha_own_configs("homeassistant", "gw.lan");
        assert_eq!(own, "homeassistant/+/crd-gw_2elan/+/config");
        let matches = crate::core::topic::matches;
        assert!(matches(&own, &ha_keys("gw.lan", "m").0));
        assert!(!matches(&own, &ha_keys("gw_lan", "m").0), "not the other's");
    }

    /// Property: over thousands of random names (letters, digits, `.`, `_`,
    /// `-` and multibyte characters, seeded so a failure repeats), no two
    /// distinct (node, module or none, entity of the five kinds) share a discovery topic or a
    /// unique_id, no two nodes a device identifier, and every id is in HA's
    /// alphabet.
    #[test]
    fn home_assistant_ids_are_one_to_one_over_random_names() {
        use std::collections::HashMap;
        const ALPHABET: [char; 12] = ['a', 'b', 'Z', '0', '9', '.', '_', '-', 'é', 'ß', '日', '2'];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        };
        fn name(next: &mut dyn FnMut(u64) -> usize) -> String {
            let len = 1 + next(5);
            (0..len)
                .map(|_| ALPHABET[next(ALPHABET.len() as u64)])
                .collect()
        }
        let (mut topics, mut uids) = (HashMap::new(), HashMap::new());
        let mut devices = HashMap::new();
        for i in 0..25_000 {
            let node = name(&mut next);
            let module = name(&mut next);
            let (e, module) = match i % 5 {
                0 => (HaEntity::State(&module), module.clone()),
                1 => (HaEntity::Events(&module), module.clone()),
                2 => (HaEntity::Connectivity, String::new()),
                3 => (HaEntity::Backlog, String::new()),
                _ => (HaEntity::LastError, String::new()),
            };
            let (topic, uid, dev) = entity_keys(&node, e);
            let pair = (node.clone(), module, i % 5);
            let ok = |id: &str| {
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            assert!(ok(&uid) && ok(&dev), "{uid} {dev}");
            let levels: Vec<&str> = topic.split('/').collect();
            assert_eq!(levels.len(), 5, "{topic}");
            assert!(ok(levels[2]) && ok(levels[3]), "{topic}");
            for (map, key) in [(&mut topics, topic), (&mut uids, uid)] {
                if let Some(other) = map.insert(key.clone(), pair.clone()) {
                    assert_eq!(other, pair, "{key} for two pairs");
                }
            }
            if let Some(other) = devices.insert(dev.clone(), node.clone()) {
                assert_eq!(other, node, "device {dev} for two nodes");
            }
        }
        assert!(devices.len() > 2000, "the names vary: {}", devices.len());
    }

    /// The fields HA's MQTT event docs name: `state_topic` (crd's event
    /// topic), `event_types`, `value_template` (to JSON with `event_type`),
    /// `unique_id`, `device` `identifiers`, `availability_topic`, `origin`.
    #[test]
    fn a_modules_events_are_an_event_entity_on_its_event_topic() {
        let c: serde_json::Value =
            serde_json::from_slice(&ha_events_json("crd", "gw.lan", "Wan.Down", None)).unwrap();
        assert_eq!(
            ha_config_topic("ha", "gw.lan", HaEntity::Events("Wan.Down")),
            "ha/event/crd-gw_2elan/Wan_2eDown/config"
        );
        assert_eq!(c["name"], "Wan.Down events");
        assert_eq!(c["unique_id"], "crd-gw_2elan-Wan_2eDown-event");
        assert_eq!(c["state_topic"], "crd/gw.lan/event/Wan.Down");
        let ev = Event {
            ts_ms: 1,
            module: "Wan.Down".into(),
            kind: Kind::Fired,
            code: 0,
            dur_ms: 1,
            out: String::new(),
            cause: None,
        };
        assert_eq!(
            c["state_topic"],
            render("crd", "gw.lan", "ab", (1, None), &ev).0
        );
        assert_eq!(
            c["event_types"],
            serde_json::json!(["fired", "cleared", "response", "error"])
        );
        let t = c["value_template"].as_str().unwrap();
        assert!(
            t.contains("'event_type': value_json.kind") && t.ends_with("else '' }}"),
            "{t}"
        );
        assert_eq!(c["device"]["identifiers"][0], "crd-gw_2elan");
        assert_eq!(c["availability_topic"], "crd/gw.lan/status");
        assert_eq!(c["origin"]["name"], "crd");
    }

    /// The fields HA's docs name for a diagnostic binary_sensor: topic,
    /// `unique_id` (apart from any module's), `state_topic` (crd's status),
    /// `device_class`, `entity_category`, `json_attributes_topic`, `device`,
    /// `origin`; no availability.
    #[test]
    fn the_nodes_connectivity_is_a_diagnostic_binary_sensor_on_its_status() {
        let c: serde_json::Value =
            serde_json::from_slice(&ha_connectivity_json("crd", "gw.lan", None)).unwrap();
        assert_eq!(
            ha_config_topic("ha", "gw.lan", HaEntity::Connectivity),
            "ha/binary_sensor/crd-gw_2elan/crd-status/config"
        );
        assert_eq!(c["unique_id"], "crd-gw_2elan--status");
        assert_ne!(
            c["unique_id"],
            ha_unique_id("gw.lan", HaEntity::State("status"))
        );
        assert_ne!(
            ha_config_topic("ha", "gw.lan", HaEntity::Connectivity),
            ha_config_topic("ha", "gw.lan", HaEntity::State("crd-status"))
        );
        assert_eq!(c["state_topic"], status_topic("crd", "gw.lan"));
        assert_eq!(c["json_attributes_topic"], c["state_topic"]);
        assert_eq!(c["device_class"], "connectivity");
        assert_eq!(c["entity_category"], "diagnostic");
        assert!(c.get("availability_topic").is_none(), "offline is its OFF");
        assert_eq!(c["device"]["identifiers"][0], "crd-gw_2elan");
        assert_eq!(c["origin"]["name"], "crd");
        let t = c["value_template"].as_str().unwrap();
        assert!(t.contains("value_json.state == 'online'"), "{t}");
    }

    /// The fields HA's MQTT sensor docs name, for the node's two diagnostic
    /// sensors: discovery topic (component `sensor`, under the node id),
    /// `unique_id` (apart from each other, the connectivity's and any
    /// module's), `state_topic` (the diagnostics topic), `value_template`
    /// (guarded), `entity_category`, availability, `device` `identifiers`,
    /// `origin`; `state_class` and `unit_of_measurement` for the backlog,
    /// `json_attributes_topic` (the error's time) for the last error.
    #[test]
    fn the_backlog_and_the_last_error_are_diagnostic_sensors_on_the_diag_topic() {
        let get = |e| -> serde_json::Value {
            serde_json::from_slice(&ha_diag_json("crd", "gw.lan", e, None)).unwrap()
        };
        let (b, l) = (get(HaEntity::Backlog), get(HaEntity::LastError));
        assert_eq!(
            ha_config_topic("ha", "gw.lan", HaEntity::Backlog),
            "ha/sensor/crd-gw_2elan/crd-backlog/config"
        );
        assert_eq!(
            ha_config_topic("ha", "gw.lan", HaEntity::LastError),
            "ha/sensor/crd-gw_2elan/crd-last-error/config"
        );
        assert_eq!(b["unique_id"], "crd-gw_2elan--backlog");
        assert_eq!(l["unique_id"], "crd-gw_2elan--last-error");
        assert_eq!(diag_topic("crd", "gw.lan"), "crd/gw.lan/diag");
        for c in [&b, &l] {
            assert_eq!(c["state_topic"], "crd/gw.lan/diag");
            assert_eq!(c["entity_category"], "diagnostic");
            assert_eq!(c["availability_topic"], "crd/gw.lan/status");
            assert_eq!(
                c["availability_template"],
                "{{ value_json.state if value_json is defined else '' }}"
            );
            assert_eq!(c["payload_available"], "online");
            assert_eq!(c["device"]["identifiers"][0], "crd-gw_2elan");
            assert_eq!(c["origin"]["name"], "crd");
            assert!(c["origin"].get("support_url").is_none(), "none unless set");
            let t = c["value_template"].as_str().unwrap();
            assert!(t.ends_with("if value_json is defined else '' }}"), "{t}");
            assert!(c.get("device_class").is_none(), "{c}");
        }
        assert_eq!(b["state_class"], "measurement");
        assert_eq!(b["unit_of_measurement"], "events");
        assert!(
            b["value_template"]
                .as_str()
                .unwrap()
                .contains("value_json.backlog")
        );
        assert!(l.get("state_class").is_none() && l.get("unit_of_measurement").is_none());
        assert_eq!(l["json_attributes_topic"], "crd/gw.lan/diag");
        let t = l["value_template"].as_str().unwrap();
        assert!(t.contains("(value_json.last_error or 'none')"), "{t}");
    }

    /// `homeassistant_support_url` goes into every config's `origin`, of
    /// each kind of entity; without it there is none.
    #[test]
    fn the_support_url_is_in_every_origin_when_set() {
        let url = Some("https://example.org/support");
        for c in [
            ha_config_json("crd", "r1", "Disk", "problem", url),
            ha_events_json("crd", "r1", "Disk", url),
            ha_connectivity_json("crd", "r1", url),
            ha_diag_json("crd", "r1", HaEntity::Backlog, url),
            ha_diag_json("crd", "r1", HaEntity::LastError, url),
        ] {
            let c: serde_json::Value = serde_json::from_slice(&c).unwrap();
            assert_eq!(
                c["origin"],
                serde_json::json!({"name":"crd","sw_version":env!("CARGO_PKG_VERSION"),
                    "support_url":"https://example.org/support"})
            );
        }
        let c: serde_json::Value =
            serde_json::from_slice(&ha_connectivity_json("crd", "r1", None)).unwrap();
        assert!(c["origin"].get("support_url").is_none());
    }

    #[test]
    fn the_diagnostics_payload_is_json_with_the_error_or_nothing() {
        let j: serde_json::Value =
            serde_json::from_slice(&diag_json(7, Some(("Disk: \"full\"", 5)))).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"backlog":7,"last_error":"Disk: \"full\"","last_error_ms":5})
        );
        let j: serde_json::Value = serde_json::from_slice(&diag_json(0, None)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"backlog":0,"last_error":"","last_error_ms":null})
        );
    }

    #[test]
    fn a_state_carries_the_start_of_the_runs_output() {
        let j: serde_json::Value =
            serde_json::from_slice(&state_json(true, 5, Some(0), Some(9), "97% full")).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"state":"ON","since":5,"code":0,"seq":9,"out":"97% full"})
        );
        let j: serde_json::Value =
            serde_json::from_slice(&state_json(false, 5, None, None, "")).unwrap();
        assert!(j["code"].is_null() && j["seq"].is_null() && j["out"] == "");
        let long = "é".repeat(STATE_OUT_BYTES);
        let cut = state_out(&long);
        assert_eq!(cut.len(), STATE_OUT_BYTES, "{} bytes", cut.len());
        let odd = format!("a{long}");
        assert_eq!(
            state_out(&odd).len(),
            STATE_OUT_BYTES - 1,
            "whole characters"
        );
    }

    #[test]
    fn status_is_json_on_its_topic() {
        assert_eq!(status_topic("fleet/eu", "r1"), "fleet/eu/r1/status");
        let j = String::from_utf8(status_json("online", "r1", "ab", 7, &[], false)).unwrap();
        assert_eq!(
            j,
            format!(
                r#"{{"state":"online","node":"r1","stream":"ab","version":"{}","boot_ms":7}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        let g = ["g1".to_string(), "g2".to_string()];
        let j = String::from_utf8(status_json("online", "c", "ab", 7, &g, false)).unwrap();
        assert!(j.ends_with(r#""boot_ms":7,"groups":["g1","g2"]}"#), "{j}");
        let j = String::from_utf8(status_json("online", "c", "ab", 7, &g, true)).unwrap();
        assert!(
            j.ends_with(r#""groups":["g1","g2"],"joining":true}"#),
            "{j}"
        );
    }
}
