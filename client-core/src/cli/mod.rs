//! Parts of the `petrel` binary that are not argument parsing: `remote` runs the CLI's
//! commands through a running `petrel serve` (its local API) instead of the store.

pub(crate) mod remote;
