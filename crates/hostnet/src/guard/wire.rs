//! The guard's pipe protocol: one line per order, each shorter than PIPE_BUF so that a write is
//! whole or absent. The daemon encodes orders with `Display`; the guard parses them into `Told`,
//! the state it will clean up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// Lines longer than this are not sent (a pipe write of at most PIPE_BUF bytes is atomic).
pub const MAX_LINE: usize = 4096;

/// One order from the daemon to its guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// The daemon holds `address`/`prefix` on link `index`.
    Hold {
        /// Link index.
        index: u32,
        /// The address.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// The daemon removed `address` from link `index`.
    Release {
        /// Link index.
        index: u32,
        /// The address.
        address: IpAddr,
    },
    /// While master of `key`, should the daemon die, send `packet` from `source` to
    /// `destination` on `interface` (one order a destination; they add up).
    Arm {
        /// The instance's key.
        key: String,
        /// Interface to send on.
        interface: String,
        /// Source address.
        source: IpAddr,
        /// Destination address.
        destination: IpAddr,
        /// The priority-0 advert.
        packet: Vec<u8>,
    },
    /// Forget the adverts of `key`.
    Disarm {
        /// The instance's key.
        key: String,
    },
    /// The daemon created link `name` (a virtual-MAC macvlan): delete it if the daemon dies.
    OwnLink {
        /// Link name.
        name: String,
    },
    /// The daemon deleted link `name` itself.
    DisownLink {
        /// Link name.
        name: String,
    },
    /// Forget everything: the daemon handed it all to a new process and its guard (`halo
    /// upgrade`), so that this daemon's exit removes nothing.
    ForgetAll,
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hold { index, address, prefix } => writeln!(f, "+ {index} {address} {prefix}"),
            Self::Release { index, address } => writeln!(f, "- {index} {address}"),
            Self::Arm { key, interface, source, destination, packet } => {
                write!(f, "a {key} {interface} {source} {destination} ")?;
                packet.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
                writeln!(f)
            }
            Self::Disarm { key } => writeln!(f, "d {key}"),
            Self::OwnLink { name } => writeln!(f, "m {name}"),
            Self::DisownLink { name } => writeln!(f, "n {name}"),
            Self::ForgetAll => writeln!(f, "F"),
        }
    }
}

impl Order {
    /// Parses one line (without its newline); `None` for a line that is not an order.
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let word = |i: usize| words.get(i).copied().filter(|w| !w.is_empty());
        let order = match *words.first()? {
            "+" => Self::Hold { index: word(1)?.parse().ok()?, address: word(2)?.parse().ok()?, prefix: word(3)?.parse().ok()? },
            "-" => Self::Release { index: word(1)?.parse().ok()?, address: word(2)?.parse().ok()? },
            "a" => Self::Arm {
                key: word(1)?.to_string(),
                interface: word(2)?.to_string(),
                source: word(3)?.parse().ok()?,
                destination: word(4)?.parse().ok()?,
                packet: unhex(word(5)?)?,
            },
            "d" => Self::Disarm { key: word(1)?.to_string() },
            "m" => Self::OwnLink { name: word(1)?.to_string() },
            "n" => Self::DisownLink { name: word(1)?.to_string() },
            "F" => Self::ForgetAll,
            _ => return None,
        };
        (words.len() == order.words()).then_some(order)
    }

    /// How many words the line of this order has.
    fn words(&self) -> usize {
        match self {
            Self::Hold { .. } => 4,
            Self::Release { .. } => 3,
            Self::Arm { .. } => 6,
            Self::Disarm { .. } | Self::OwnLink { .. } | Self::DisownLink { .. } => 2,
            Self::ForgetAll => 1,
        }
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // Two hex digits a byte, nothing else (from_str_radix alone would take a sign).
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A priority-0 advert the guard sends for the daemon: interface, source, destination, packet.
pub type StopAdvert = (String, IpAddr, IpAddr, Vec<u8>);

/// What the daemon told its guard, order by order: what to clean up should it die.
#[derive(Debug, Default)]
pub struct Told {
    /// Addresses held: (link index, address) → prefix.
    pub held: BTreeMap<(u32, IpAddr), u8>,
    /// Stop adverts by instance key.
    pub adverts: BTreeMap<String, Vec<StopAdvert>>,
    /// Links the daemon created.
    pub links: BTreeSet<String>,
}

impl Told {
    /// Applies one order.
    pub fn apply(&mut self, order: Order) {
        match order {
            Order::Hold { index, address, prefix } => {
                self.held.insert((index, address), prefix);
            }
            Order::Release { index, address } => {
                self.held.remove(&(index, address));
            }
            Order::Arm { key, interface, source, destination, packet } => {
                self.adverts.entry(key).or_default().push((interface, source, destination, packet));
            }
            Order::Disarm { key } => {
                self.adverts.remove(&key);
            }
            Order::OwnLink { name } => {
                self.links.insert(name);
            }
            Order::DisownLink { name } => {
                self.links.remove(&name);
            }
            Order::ForgetAll => *self = Self::default(),
        }
    }

    /// Nothing to clean up.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.adverts.is_empty() && self.links.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn every_order_reads_back_as_written() {
        let orders = [
            Order::Hold { index: 2, address: ip("192.0.2.170"), prefix: 24 },
            Order::Hold { index: 3, address: ip("2001:db8::10"), prefix: 64 },
            Order::Release { index: 2, address: ip("192.0.2.170") },
            Order::Arm {
                key: "2-51-4".into(),
                interface: "eth0".into(),
                source: ip("192.0.2.11"),
                destination: ip("224.0.0.18"),
                packet: vec![0x31, 0x33, 0x00, 0x01],
            },
            Order::Disarm { key: "2-51-4".into() },
            Order::OwnLink { name: "vrrp.51".into() },
            Order::DisownLink { name: "vrrp.51".into() },
            Order::ForgetAll,
        ];
        for order in orders {
            let line = order.to_string();
            assert!(line.ends_with('\n') && line.len() < MAX_LINE);
            assert_eq!(Order::parse(line.trim_end()), Some(order), "{line}");
        }
    }

    #[test]
    fn the_guard_keeps_what_is_held_and_armed_and_forgets_it() {
        let mut told = Told::default();
        for line in ["+ 2 192.0.2.170 24", "a 2-51-4 eth0 192.0.2.11 224.0.0.18 31330001", "m vrrp.51"] {
            told.apply(Order::parse(line).expect(line));
        }
        assert_eq!(told.held.get(&(2, ip("192.0.2.170"))), Some(&24));
        assert_eq!(told.adverts["2-51-4"], vec![("eth0".to_string(), ip("192.0.2.11"), ip("224.0.0.18"), vec![0x31, 0x33, 0x00, 0x01])]);
        assert!(told.links.contains("vrrp.51"));
        for line in ["d 2-51-4", "- 2 192.0.2.170", "n vrrp.51"] {
            told.apply(Order::parse(line).expect(line));
        }
        assert!(told.is_empty());
        for line in ["+ 2 192.0.2.170 24", "a 2-51-4 eth0 192.0.2.11 224.0.0.18 31", "m vrrp.51", "F"] {
            told.apply(Order::parse(line).expect(line));
        }
        assert!(told.is_empty(), "F forgets everything");
    }

    #[test]
    fn a_line_that_is_not_an_order_is_refused() {
        for line in [
            "",
            "a 2-51-4 eth0 192.0.2.11 224.0.0.18 zz",
            "a 2-51-4 eth0 192.0.2.11 224.0.0.18 313",
            // from_str_radix takes a sign: "+f" is not two hex digits.
            "a 2-51-4 eth0 192.0.2.11 224.0.0.18 +f31",
            "+ 2 192.0.2.170",
            "+ x 192.0.2.170 24",
            "+ 2 192.0.2.170 24 extra",
            "d",
            "? 1",
        ] {
            assert_eq!(Order::parse(line), None, "{line:?}");
        }
    }
}
