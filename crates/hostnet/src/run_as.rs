//! Starting a command as another user with all of that user's groups, as `initgroups(3)` gives
//! a login: keepalived's `script_user` runs scripts so, and a script may need a group it is a
//! member of (a socket's, a key file's). The standard library's own uid and gid settings drop
//! every supplementary group instead.

use std::ffi::CString;

use nix::unistd::{Gid, Uid, User};

/// Whom a command runs as: the user, its primary group and its supplementary groups.
#[derive(Debug, Clone)]
pub struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    /// `user`'s credentials, its groups looked up now (NSS: this blocks, off any runtime thread).
    pub fn of(user: &User) -> std::io::Result<Self> {
        let name = CString::new(user.name.as_bytes()).map_err(std::io::Error::other)?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)?;
        Ok(Self { uid: user.uid, gid: user.gid, groups })
    }

    /// The supplementary groups (the primary one among them).
    pub fn groups(&self) -> &[Gid] {
        &self.groups
    }

    /// Makes `command` drop to these credentials in the child, before it executes: groups, then
    /// gid, then uid (the order in which each step still has the privilege it needs).
    pub fn apply(&self, command: &mut std::process::Command) {
        crate::sys::drop_privileges_before_exec(command, self.uid, self.gid, self.groups.clone());
    }
}
