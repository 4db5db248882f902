//! One port, one process: our cores share the listening port through `SO_REUSEPORT`, and no
//! other process may listen there (upstream fails with "address already in use", and a second
//! server that joined our `SO_REUSEPORT` group would take part of the connections).
//!
//! The kernel lets any socket of the same effective UID that sets `SO_REUSEPORT` join the
//! group, so a bind alone proves nothing. [`check`] therefore asks the kernel for every TCP
//! socket listening on the port (`/proc/net/tcp` and `/proc/net/tcp6` of our network
//! namespace) and compares their inodes with our listeners' (`fstat`). The server runs it
//! twice: before binding (a server already there: we never join its group) and after every
//! core listens (two servers starting at once).
//!
//! Why that is race-free between two servers A and B that both check after listening:
//! either B's last listener was in place before A's check began — A sees it and fails — or
//! A's check began first; then A's listeners were in place before B's check began, and B
//! fails. A server that fails closes its listeners before it reports the error. What the
//! check cannot stop is a foreign program of the same user that sets `SO_REUSEPORT` and
//! binds the port after our check; any other listener is refused (by the bind itself when it
//! does not share the port, by the check when it does).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where the kernel lists TCP sockets of this network namespace.
const TABLES: [(&str, bool); 2] = [("/proc/net/tcp", false), ("/proc/net/tcp6", true)];
/// State column of a listening socket in those tables.
const STATE_LISTEN: &str = "0A";

/// A socket of another process listening on our port.
#[derive(Debug, PartialEq, Eq)]
pub struct Foreign {
    pub addr: SocketAddr,
    pub uid: u32,
}

/// Every listener on `addr`'s port that overlaps `addr` and is not one of `ours` (socket
/// inodes). `Err` when the kernel's tables cannot be read.
pub fn check(addr: SocketAddr, ours: &[u64]) -> io::Result<Vec<Foreign>> {
    let mut foreign = Vec::new();
    for (path, v6) in TABLES {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading {path}: {e}"))),
        };
        for line in text.lines().skip(1) {
            let Some(entry) = parse_line(line, v6) else {
                continue;
            };
            if entry.listening
                && entry.addr.port() == addr.port()
                && overlaps(entry.addr.ip(), addr.ip())
                && !ours.contains(&entry.inode)
            {
                foreign.push(Foreign {
                    addr: entry.addr,
                    uid: entry.uid,
                });
            }
        }
    }
    Ok(foreign)
}

/// The message of a refused start: what listens there and how to find it.
pub fn describe(foreign: &[Foreign]) -> String {
    let list: Vec<String> = foreign
        .iter()
        .map(|f| format!("{} (uid {})", f.addr, f.uid))
        .collect();
    format!(
        "address already in use: another process listens on {} (find it with `ss -ltnp`)",
        list.join(", ")
    )
}

struct Entry {
    addr: SocketAddr,
    listening: bool,
    uid: u32,
    inode: u64,
}

/// One row of `/proc/net/tcp{,6}`: `sl local rem st tx:rx tr:when retr uid timeout inode …`.
fn parse_line(line: &str, v6: bool) -> Option<Entry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 { parse_v6(ip)? } else { parse_v4(ip)? };
    Some(Entry {
        addr: SocketAddr::new(ip, port),
        listening: *fields.get(3)? == STATE_LISTEN,
        uid: fields.get(7)?.parse().ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// The kernel prints an address as 32-bit words in host byte order.
fn parse_v4(hex: &str) -> Option<IpAddr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
}

fn parse_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let ip = Ipv6Addr::from(bytes);
    Some(match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    })
}

/// Whether a listener on `a` takes connections meant for `b` or the other way round: the same
/// address, or a wildcard on either side (`::` also covers IPv4 unless it is IPv6-only, which
/// the tables do not show: counted as overlapping).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let wildcard = |ip: IpAddr, other: IpAddr| match ip {
        IpAddr::V6(v6) => v6.is_unspecified(),
        IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
    };
    a == b || wildcard(a, b) || wildcard(b, a)
}

/// The inode of a socket, as the kernel's tables show it.
pub fn inode_of(socket: &impl std::os::fd::AsRawFd) -> io::Result<u64> {
    // SAFETY: `stat` is plain data that fstat fills for a descriptor we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the lifetime of `socket`; `st` is a valid buffer.
    if unsafe { libc::fstat(socket.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_rows() {
        let v4 = "   0: 0100007F:1CCD 00000000:0000 0A 00000000:00000000 00:00000000 00000000  \
                  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let e = parse_line(v4, false).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(e.addr, "127.0.0.1:7373".parse().unwrap());
        }
        assert!(e.listening);
        assert_eq!((e.uid, e.inode), (1000, 4242));
        let v6 =
            "   0: 00000000000000000000000000000000:1CCD 00000000000000000000000000000000:0000 \
                  0A 00000000:00000000 00:00000000 00000000     0        0 77 1";
        let e = parse_line(v6, true).unwrap();
        assert_eq!(e.addr, "[::]:7373".parse().unwrap());
        assert!(parse_line("  sl  local_address rem_address   st", false).is_none());
    }

    #[test]
    fn wildcards_overlap_specific_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("127.0.0.1"), ip("0.0.0.0")));
        assert!(overlaps(ip("::"), ip("127.0.0.1")));
        assert!(!overlaps(ip("0.0.0.0"), ip("::1")));
        assert!(!overlaps(ip("127.0.0.1"), ip("127.0.0.2")));
    }

    #[test]
    fn finds_a_listener_of_another_socket_and_not_our_own() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ours.local_addr().unwrap();
        let found = check(addr, &[]).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, addr);
        let inode = inode_of(&ours).unwrap();
        assert!(check(addr, &[inode]).unwrap().is_empty());
    }
}
