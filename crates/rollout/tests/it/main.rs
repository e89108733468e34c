//! Data-driven tests of the CloneSet sync algorithm, most of them ports of upstream's tables.

mod diffs;
mod inplace;
mod pod;
mod revision;
mod scale;
mod support;
mod update_sort;
