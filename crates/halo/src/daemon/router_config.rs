//! What the VRRP state machine is told of an instance: its `halo.toml` section as
//! `halo_vrrp`'s router configuration, shared by the instances' drivers and their sync groups.

use halo_config::VrrpInstance;
use halo_vrrp::fsm::{GratuitousSchedule, RouterConfig};
use halo_vrrp::packet::Auth;

/// The state machine's configuration for an instance.
pub fn router_config(config: &VrrpInstance) -> RouterConfig {
    RouterConfig {
        vrid: config.virtual_router_id,
        version: config.version,
        priority: config.priority,
        advert_interval: config.advert_interval,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        eager_start: config.initial_state == halo_config::InitialState::Master,
        auth: config.auth_password.as_deref().map_or(Auth::None, Auth::pass),
        gratuitous: GratuitousSchedule { delay: config.gratuitous.delay, refresh: config.gratuitous.refresh },
    }
}
