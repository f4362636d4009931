//! Berth CNI: the runtime side of the Container Network Interface (network namespaces,
//! plugin chains ADD/DEL/CHECK, cached results).
//!
//! Empty until the pod networking issue; the crate exists now so the workspace has its
//! final shape.
