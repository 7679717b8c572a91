// How policy components are compiled, shared by `policy build` and the
// webhook's build script (which `include!`s this file), so that an author's
// build reuses the dependencies the webhook's build compiled in the same
// target directory, and both make components the same way.

/// The cargo profile, defined on the command line (`--config`) so that an
/// author's Cargo.toml needs none: small code that instantiates fast.
pub const POLICY_PROFILE: &str = "agyn-policy";

pub const POLICY_PROFILE_CONFIG: &[&str] = &[
    "profile.agyn-policy.inherits=\"release\"",
    "profile.agyn-policy.opt-level=\"s\"",
    "profile.agyn-policy.lto=true",
    "profile.agyn-policy.codegen-units=1",
    "profile.agyn-policy.panic=\"abort\"",
    "profile.agyn-policy.strip=true",
    "profile.agyn-policy.debug=false",
];

/// A guest stack of 64 KiB: a policy needs little, and every page of
/// memory an instance has is a page the pooling allocator resets after
/// each evaluation.
pub const POLICY_RUSTFLAGS: &str = "-C link-arg=-zstack-size=65536";
