//! `dropspec run --keep`: a scenario's namespaces left up under recognisable names.
