//! An echo server on a free loopback port: the simplest upstream for a proxy under test.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    io::{AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

/// Read size of each connection: large enough that throughput measurements are not bound
/// by it.
const BUFFER: usize = 64 << 10;

/// Starts a TCP server on `127.0.0.1:0` that writes back every byte it reads and, at the
/// client's EOF, shuts down its own write side; returns its address.
///
/// It serves every connection at once, on tasks of the current runtime, with `TCP_NODELAY`
/// so small round trips measure latency rather than Nagle's delay, until the runtime ends.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap_or_else(|e| panic!("bind an echo server on 127.0.0.1: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the echo server's address: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    addr
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(BUFFER, reader);
    let _ = tokio::io::copy_buf(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn every_byte_comes_back_and_eof_is_passed_on() {
        let addr = echo_server().await;
        assert!(addr.ip().is_loopback());
        let mut clients = Vec::new();
        for i in 0..3_u8 {
            clients.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..200_000_u32).map(|n| (n as u8) ^ i).collect();
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let (mut reader, mut writer) = stream.split();
                let send = async {
                    writer.write_all(&data).await.unwrap();
                    writer.shutdown().await.unwrap();
                };
                let mut back = Vec::new();
                let receive = reader.read_to_end(&mut back);
                let ((), read) = tokio::join!(send, receive);
                read.unwrap();
                assert!(back == data, "client {i} got other bytes back");
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
    }
}
