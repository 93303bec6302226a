//! Parts of the `petrel` binary that are not argument parsing: `commands` runs every
//! command as calls of the API's methods, on a running `petrel serve` or in process.

pub(crate) mod commands;
