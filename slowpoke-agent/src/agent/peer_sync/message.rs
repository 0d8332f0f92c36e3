//! The synchronized-pause datagram: a fixed 48-byte layout, authenticated with the plan's key,
//! and the per-sender sequence rule that refuses replays. Pure (no I/O), unit-tested.
//!
//! Layout (big-endian):
//!
//! | bytes  | field                                                                 |
//! |--------|-----------------------------------------------------------------------|
//! | 0..4   | magic `SPKS`                                                          |
//! | 4      | version (1)                                                           |
//! | 5..8   | zero                                                                  |
//! | 8..24  | sender's sync IP (IPv6, or IPv4-mapped)                               |
//! | 24..26 | sender's sync port                                                    |
//! | 26..32 | sender's instance: 48 random bits drawn when its agent started          |
//! | 32..40 | sequence number (strictly increasing per sender)                      |
//! | 40..56 | HMAC-SHA256 of bytes 0..40 under the plan's key, first 16 bytes        |
//!
//! The sender (address and instance) is named inside the authenticated bytes, not taken from
//! the UDP source address (which anyone can forge): replays are refused per authenticated
//! sender. The instance tells apart agents that report the same address (bound to `0.0.0.0`)
//! and a restarted agent from its previous run.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Bytes of one datagram.
pub const LEN: usize = 56;
const MAGIC: &[u8; 4] = b"SPKS";
const VERSION: u8 = 1;
const BODY: usize = 40;
/// Bytes of the truncated MAC (128 bits: forging one takes 2^128 tries on average).
const MAC_LEN: usize = 16;
/// Distinct senders remembered per key: more than any experiment has agents; a flood of valid
/// senders (only a key holder can make one) cannot grow the table beyond it.
pub const MAX_SENDERS: usize = 1024;

/// The plan's 32-byte key.
pub type Key = [u8; 32];

/// Why a datagram was dropped (each counted apart in `GET /v1/stats` → `peer_sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Wrong length, magic or version.
    Malformed,
    /// The MAC does not verify under the plan's key (forged, corrupted, another experiment's).
    BadMac,
    /// Its sequence number does not exceed the last accepted from the same sender.
    Replayed,
}

/// Who sent a datagram: its sync address and its agent's instance (48 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sender {
    pub addr: SocketAddr,
    pub instance: u64,
}

/// A verified datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub sender: Sender,
    pub seq: u64,
}

/// Parses a 64-hex-digit key; `None` when it is not exactly that.
pub fn parse_key(text: &str) -> Option<Key> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).ok()?;
    Some(key)
}

fn mac(key: &Key) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The datagram `sender` sends with sequence number `seq` under `key` (only the low 48 bits of
/// the instance travel).
pub fn encode(key: &Key, sender: Sender, seq: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    let ip = match sender.addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    b[8..24].copy_from_slice(&ip.octets());
    b[24..26].copy_from_slice(&sender.addr.port().to_be_bytes());
    b[26..32].copy_from_slice(&sender.instance.to_be_bytes()[2..]);
    b[32..40].copy_from_slice(&seq.to_be_bytes());
    let mut m = mac(key);
    m.update(&b[..BODY]);
    b[BODY..BODY + MAC_LEN].copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
    b
}

/// The right length, magic and version (checked before anything else, without a key).
pub fn well_formed(b: &[u8]) -> bool {
    b.len() == LEN && &b[0..4] == MAGIC && b[4] == VERSION
}

/// Checks the layout, then the MAC (in constant time); the sequence is [`Replays`]' job.
pub fn decode(key: &Key, b: &[u8]) -> Result<Message, Refused> {
    if !well_formed(b) {
        return Err(Refused::Malformed);
    }
    let mut m = mac(key);
    m.update(&b[..BODY]);
    m.verify_truncated_left(&b[BODY..BODY + MAC_LEN])
        .map_err(|_| Refused::BadMac)?;
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[8..24]);
    let ip = Ipv6Addr::from(ip);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    let port = u16::from_be_bytes([b[24], b[25]]);
    let mut instance = [0u8; 8];
    instance[2..].copy_from_slice(&b[26..32]);
    let seq = u64::from_be_bytes(b[32..40].try_into().expect("8 bytes"));
    Ok(Message {
        sender: Sender {
            addr: SocketAddr::new(ip, port),
            instance: u64::from_be_bytes(instance),
        },
        seq,
    })
}

/// The last sequence number accepted from each sender under one key: a number that does not
/// exceed it is a replay (or a reordered datagram, equally stale: its pause moment has passed).
#[derive(Debug, Default)]
pub struct Replays {
    last: HashMap<Sender, u64>,
}

impl Replays {
    /// Accepts `m` (and remembers its number) or says it is a replay. A new sender beyond
    /// [`MAX_SENDERS`] is refused as a replay too: the table never grows past it.
    pub fn accept(&mut self, m: &Message) -> Result<(), Refused> {
        let full = self.last.len() >= MAX_SENDERS;
        match self.last.get_mut(&m.sender) {
            Some(last) if m.seq <= *last => Err(Refused::Replayed),
            Some(last) => {
                *last = m.seq;
                Ok(())
            }
            None if full => Err(Refused::Replayed),
            None => {
                self.last.insert(m.sender, m.seq);
                Ok(())
            }
        }
    }

    /// A new key: numbers seen under the old one say nothing about the new one's.
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = [7u8; 32];

    fn sender() -> Sender {
        Sender {
            addr: "10.77.0.11:7172".parse().unwrap(),
            instance: 0xabcd_ef01_2345,
        }
    }

    #[test]
    fn a_datagram_decodes_to_its_sender_and_sequence() {
        let b = encode(&KEY, sender(), 1_700_000_000_000_000_001);
        assert_eq!(&b[..4], b"SPKS");
        let m = decode(&KEY, &b).expect("valid");
        assert_eq!(m.sender, sender());
        assert_eq!(m.seq, 1_700_000_000_000_000_001);
        let v6 = Sender {
            addr: "[fd00::2]:9".parse().unwrap(),
            instance: 1,
        };
        assert_eq!(decode(&KEY, &encode(&KEY, v6, 5)).unwrap().sender, v6);
    }

    #[test]
    fn any_flipped_bit_or_another_key_fails() {
        let b = encode(&KEY, sender(), 42);
        for byte in 0..LEN {
            for bit in 0..8 {
                let mut f = b;
                f[byte] ^= 1 << bit;
                let got = decode(&KEY, &f);
                assert!(
                    got == Err(Refused::BadMac) || got == Err(Refused::Malformed),
                    "byte {byte} bit {bit} flipped was accepted: {got:?}"
                );
            }
        }
        let mut other = KEY;
        other[31] ^= 1;
        assert_eq!(decode(&other, &b), Err(Refused::BadMac));
    }

    #[test]
    fn wrong_lengths_magic_and_versions_are_malformed() {
        let b = encode(&KEY, sender(), 42);
        assert_eq!(decode(&KEY, &b[..LEN - 1]), Err(Refused::Malformed));
        assert_eq!(decode(&KEY, &[]), Err(Refused::Malformed));
        let mut long = [0u8; LEN + 1];
        long[..LEN].copy_from_slice(&b);
        assert_eq!(decode(&KEY, &long), Err(Refused::Malformed));
        let mut v2 = b;
        v2[4] = 2;
        assert_eq!(decode(&KEY, &v2), Err(Refused::Malformed));
    }

    #[test]
    fn a_sequence_number_is_taken_once_and_never_going_back() {
        let mut r = Replays::default();
        let m = |seq| Message {
            sender: sender(),
            seq,
        };
        assert_eq!(r.accept(&m(10)), Ok(()));
        assert_eq!(
            r.accept(&m(10)),
            Err(Refused::Replayed),
            "the same number again"
        );
        assert_eq!(r.accept(&m(9)), Err(Refused::Replayed), "going back");
        assert_eq!(r.accept(&m(11)), Ok(()));
        // Another sender, or another instance at the same address, has its own numbers.
        let other = Message {
            sender: Sender {
                addr: "10.77.0.12:7172".parse().unwrap(),
                ..sender()
            },
            seq: 1,
        };
        assert_eq!(r.accept(&other), Ok(()));
        let restarted = Message {
            sender: Sender {
                instance: 7,
                ..sender()
            },
            seq: 1,
        };
        assert_eq!(r.accept(&restarted), Ok(()));
        r.clear();
        assert_eq!(r.accept(&m(3)), Ok(()), "a new key starts afresh");
    }

    #[test]
    fn the_sender_table_is_bounded() {
        let mut r = Replays::default();
        for i in 0..MAX_SENDERS {
            let s = Sender {
                instance: i as u64,
                ..sender()
            };
            assert_eq!(r.accept(&Message { sender: s, seq: 1 }), Ok(()));
        }
        let extra = Message {
            sender: Sender {
                instance: 1 << 40,
                ..sender()
            },
            seq: 1,
        };
        assert_eq!(r.accept(&extra), Err(Refused::Replayed));
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let hex = "00".repeat(31) + "fF";
        let k = parse_key(&hex).unwrap();
        assert_eq!(k[31], 0xff);
        assert_eq!(parse_key(&hex[..62]), None);
        assert_eq!(parse_key(&("g".to_owned() + &hex[1..])), None);
        assert_eq!(parse_key(&(hex.clone() + "00")), None);
    }
}
