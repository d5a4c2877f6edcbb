//! Child processes: the one `unsafe` file (`sys`), the one place children are built
//! (`spawn`), runs in flight in a poll loop (`run`), and the record of their
//! process groups that outlives a killed crd (`groups`).

pub mod groups;
pub mod poller;
pub mod recipe;
pub mod run;
pub mod spawn;
pub mod sys;
