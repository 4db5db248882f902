//! Who is asking, and may they: identities from certificates and API keys, the admin, and
//! compiled policies (auth-and-policy.md).

pub mod apikey;
pub mod cert;
pub mod identity;
pub mod policy;

pub use identity::Identity;
pub use policy::{Decision, PolicySet};
