//! Which McpAccessPolicies bind an McpServer: the pure half of the dereference step, used by
//! `render` on files and by the controller on its cache.
//!
//! The rule itself lives in [`palisade_crds::bind`], so that `palisade-server policy check` and
//! `policy compile` bind exactly like the operator; this module re-exports it for the operator's
//! callers.

pub use palisade_crds::bind::{Bound, bound_policies, selector_matches};
