//! Child processes: the one `unsafe` file (`sys`), the one place children are built
//! (`spawn`), and runs in flight in a poll loop (`run`).

pub mod poller;
pub mod recipe;
pub mod run;
pub mod spawn;
pub mod sys;
