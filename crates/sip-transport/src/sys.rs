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

/// Maximum datagrams fetched per syscall.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: the largest UDP payload (65,507 bytes over IPv4) plus one byte,
/// so that a datagram filling the whole buffer is recognisably oversized rather than silently
/// truncated.
pub const DGRAM_BUF: usize = 65_536;

/// Buffers for one batch, reused for the life of a worker.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    lens: [usize; BATCH],
    flags: [i32; BATCH],
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
        let addrs = vec![unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() }; BATCH];
        let mut b = RecvBatch {
            bufs,
            addrs,
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            lens: [0; BATCH],
            flags: [0; BATCH],
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
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut b.iovs[i] as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Blocks until at least one datagram is available (or the socket's receive timeout
    /// expires), then fetches up to [`BATCH`] datagrams. Returns how many were received.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
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
        }
        self.count = n;
        Ok(n)
    }

    /// The `i`-th datagram of the last batch: payload, source address, and whether the kernel
    /// truncated it (`MSG_TRUNC`).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>, bool)> {
        if i >= self.count {
            return None;
        }
        let len = self.lens[i].min(DGRAM_BUF);
        let truncated = self.flags[i] & libc::MSG_TRUNC != 0;
        Some((&self.bufs[i][..len], sockaddr_to_std(&self.addrs[i]), truncated))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which is smaller.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
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
