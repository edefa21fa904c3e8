//! The one place with `unsafe`: batched UDP receive with `recvmmsg(2)`.
//!
//! `recvmmsg` with `MSG_WAITFORONE` blocks until at least one datagram is queued, then returns
//! every datagram already queued (up to the batch size) in one syscall. Under load this turns
//! 32 `recvfrom` calls into one; when idle it behaves like a blocking `recvfrom`.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Maximum datagrams fetched per syscall.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: the largest UDP payload (65,507 bytes over IPv4) plus one byte,
/// so that a datagram filling the whole buffer is recognisably oversized rather than silently
/// truncated.
pub const DGRAM_BUF: usize = 65_536;

/// Control-message space per datagram: one `SCM_TIMESTAMPNS` (a `timespec`).
const CTRL: usize = 64;

/// Buffers for one batch, reused for the life of a worker.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrls: Vec<[u64; CTRL / 8]>,
    hdrs: Vec<libc::mmsghdr>,
    lens: [usize; BATCH],
    flags: [i32; BATCH],
    stamps: [Option<SystemTime>; BATCH],
    count: usize,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into `bufs`/`addrs`, which are
// owned by the same struct and never reallocated after construction.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Allocates the buffers of one batch.
    pub fn new() -> Self {
        let bufs: Vec<Box<[u8]>> = (0..BATCH)
            .map(|_| vec![0u8; DGRAM_BUF].into_boxed_slice())
            .collect();
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let addrs =
            vec![unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() }; BATCH];
        let mut b = RecvBatch {
            bufs,
            addrs,
            iovs: Vec::with_capacity(BATCH),
            ctrls: vec![[0u64; CTRL / 8]; BATCH],
            hdrs: Vec::with_capacity(BATCH),
            lens: [0; BATCH],
            flags: [0; BATCH],
            stamps: [None; BATCH],
            count: 0,
        };
        for i in 0..BATCH {
            let buf = &mut b.bufs[i];
            b.iovs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
        for i in 0..BATCH {
            // SAFETY: mmsghdr is plain old data; zeroed is valid before we fill the pointers.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut b.iovs[i] as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = b.ctrls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CTRL as _;
            b.hdrs.push(h);
        }
        b
    }

    /// Blocks until at least one datagram is available (or the socket's receive timeout
    /// expires), then fetches up to [`BATCH`] datagrams. Returns how many were received.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CTRL as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every mmsghdr points at a live iovec/sockaddr_storage owned by `self`, sized
        // as declared; the kernel writes at most those sizes.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
            self.flags[i] = self.hdrs[i].msg_hdr.msg_flags;
            self.stamps[i] = rx_timestamp(&self.hdrs[i].msg_hdr);
        }
        self.count = n;
        Ok(n)
    }

    /// When the kernel received the `i`-th datagram (`SO_TIMESTAMPNS`), if it said.
    pub fn stamp(&self, i: usize) -> Option<SystemTime> {
        if i < self.count { self.stamps[i] } else { None }
    }

    /// The `i`-th datagram of the last batch: payload, source address, and whether the kernel
    /// truncated it (`MSG_TRUNC`).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>, bool)> {
        if i >= self.count {
            return None;
        }
        let len = self.lens[i].min(DGRAM_BUF);
        let truncated = self.flags[i] & libc::MSG_TRUNC != 0;
        Some((
            &self.bufs[i][..len],
            sockaddr_to_std(&self.addrs[i]),
            truncated,
        ))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received datagram.
fn rx_timestamp(h: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the control buffer and its length were set by us and updated by the kernel;
    // CMSG_* walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Asks the kernel to stamp every received datagram with its arrival time, so the worker can
/// tell how long it waited in the socket queue (the overload signal that matters: a request
/// that waited longer than the client's retransmission timer has been sent again already).
pub fn enable_rx_timestamps(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt with a pointer to a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which is smaller.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says the storage holds a sockaddr_in6, which is smaller.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends datagrams with one `sendmmsg(2)` (at most [`BATCH`] at a time). Returns how many the
/// kernel took from the front of `items`; the caller retries the rest one by one.
pub fn send_batch(sock: &impl AsRawFd, items: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let items = &items[..items.len().min(BATCH)];
    if items.is_empty() {
        return Ok(0);
    }
    let addrs: Vec<socket2::SockAddr> = items
        .iter()
        .map(|(a, _)| socket2::SockAddr::from(*a))
        .collect();
    let mut iovs: Vec<libc::iovec> = items
        .iter()
        .map(|(_, d)| libc::iovec {
            // The kernel only reads through this pointer (send).
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(items.len());
    for i in 0..items.len() {
        // SAFETY: mmsghdr is plain old data; zeroed is valid before we fill the pointers.
        let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        h.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        h.msg_hdr.msg_namelen = addrs[i].len();
        h.msg_hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
        h.msg_hdr.msg_iovlen = 1;
        hdrs.push(h);
    }
    // SAFETY: every mmsghdr points at a live sockaddr and iovec of the vectors above, which
    // outlive the call; the iovecs point at the callers' slices, only read by the kernel.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
