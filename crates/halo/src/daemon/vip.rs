//! A virtual address held by this host, as VRRP masters and BGP announcements hold theirs: added
//! with a short kernel lifetime and refreshed while held, so that a hung halo's addresses expire
//! by themselves, and told to the guard, so that a killed halo's are removed at once.

use std::net::IpAddr;
use std::time::Duration;

use halo_hostnet::netlink::Netlink;

use super::guard::Guard;

/// Lifetime of a held address in the kernel: it is deleted this long after the last refresh.
pub const VIP_LIFETIME: Duration = Duration::from_secs(2);
/// How often a held address's lifetime is renewed.
pub const VIP_REFRESH: Duration = Duration::from_millis(500);

/// Adds the address (or renews its lifetime) on interface `index`; once it is there, the guard
/// holds it too. Whether it was added (it was not there: expired while halo was not scheduled,
/// or removed by someone), for the caller to announce it again.
pub async fn hold(netlink: &Netlink, guard: Option<&Guard>, index: u32, address: IpAddr, prefix: u8) -> halo_hostnet::Result<bool> {
    super::test_hooks::refresh_may_fail(address)?;
    let added = netlink.add_or_refresh_address(index, address, prefix, Some(VIP_LIFETIME)).await?;
    if let Some(guard) = guard {
        guard.hold(index, address, prefix);
    }
    Ok(added)
}

/// Removes the address from interface `index` and, once it is gone, from the guard's care;
/// whether it was there. An address that could not be removed stays in the guard's care.
pub async fn release(netlink: &Netlink, guard: Option<&Guard>, index: u32, address: IpAddr) -> halo_hostnet::Result<bool> {
    let removed = netlink.remove_address(index, address).await?;
    if let Some(guard) = guard {
        guard.release(index, address);
    }
    Ok(removed)
}
