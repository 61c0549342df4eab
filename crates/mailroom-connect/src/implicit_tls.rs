//! Implicit TLS (port 465) on a socket mailroom opened itself, so that Nagle's algorithm is off as on
//! every other SMTP connection. lettre's own implicit-TLS connect opens its socket without
//! `TCP_NODELAY`; the last, partial segment of each message then waits for the server's delayed ACK
//! (up to about 40 ms) whenever a message spans more than one segment.
//!
//! The handshake is lettre's (`AsyncNetworkStream::upgrade_tls`, so certificates are verified exactly as
//! for STARTTLS); the secured stream is then handed to lettre as the transport of a new connection.
//! lettre marks `AsyncNetworkStream` as not meant to be public (deprecated since 0.11.14): recheck this
//! module when upgrading lettre.

#![allow(deprecated)]

use lettre::transport::smtp::client::{AsyncNetworkStream, AsyncTokioStream, TlsParameters};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A TLS session over a TCP socket, readable and writable as a Tokio stream.
#[derive(Debug)]
pub(crate) struct SecuredStream {
    inner: Compat<AsyncNetworkStream>,
    peer: SocketAddr,
}

impl SecuredStream {
    /// Performs the TLS handshake on `socket` (connected to `peer`).
    pub(crate) async fn handshake(
        socket: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: TlsParameters,
    ) -> Result<Self, lettre::transport::smtp::Error> {
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(socket));
        stream.upgrade_tls(tls).await?;
        Ok(Self {
            inner: stream.compat(),
            peer,
        })
    }
}

impl AsyncTokioStream for SecuredStream {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl AsyncRead for SecuredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SecuredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
