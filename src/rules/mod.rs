//! Rules without a fork (cargo feature `collector`): a rule module's register
//! (`register.rs`: per key, a count, sum, mean, minimum, maximum, latest value or
//! rate over a sliding period, in fixed buckets) and the number a message feeds it
//! (`value.rs`: a dotted path into the payload). Pure: the collector calls them
//! with the message and its receive time and carries out what the condition
//! decides; nothing here reads a file, a socket or a clock.

pub mod register;
pub mod value;
