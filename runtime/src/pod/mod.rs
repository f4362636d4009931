//! Pod specs (the wire types of `berth_api::pod`, re-exported) and the plan a spec turns
//! into: one task spec per container, the QoS class and the pod's totals.

pub use berth_api::pod::*;

mod plan;

pub use plan::{plan, PodPlan};
