//! The pure core: what crd decides, with no file, socket, process or clock of its
//! own. Inputs are values (`now`, bytes, exit statuses, settings); outputs are values.
//! May import: std only (and serde/postcard for the event codec).

pub mod config;
pub mod date;
pub mod decide;
pub mod dur;
pub mod event;
pub mod json;
pub mod lifecycle;
pub mod module;
pub mod output;
pub mod schedule;
pub mod sha256;
pub mod status;
pub mod topic;
