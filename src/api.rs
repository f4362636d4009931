//! The agent API's wire types live in the `berth-api` crate (shared with the central
//! allocator); this module gathers its requests, views and errors under one path for the
//! agent's routes and the CLI.

pub use berth_api::container::*;
pub use berth_api::error::*;
pub use berth_api::image::*;
pub use berth_api::node;
pub use berth_api::pod::{MemberView, PodView};
