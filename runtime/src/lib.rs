//! Berth runtime: turns an image and a task spec into a running, limited container.
//!
//! Empty until the containers issue: the OCI spec generation, the libcontainer-driven shim,
//! cgroups and stats land here. The crate exists now so the workspace has its final shape.
