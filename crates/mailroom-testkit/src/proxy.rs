//! A TCP proxy on loopback that counts the connections through it: how many are open now and the
//! most ever open at once — what a server would see of a client's concurrency.

use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct CountingProxy {
    pub port: u16,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts forwarding a free port on 127.0.0.1 to `target_port`.
    pub async fn start(target_port: u16) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let (o, m, t) = (open.clone(), most.clone(), total.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let now_open = o.fetch_add(1, Ordering::AcqRel) + 1;
                m.fetch_max(now_open, Ordering::AcqRel);
                t.fetch_add(1, Ordering::AcqRel);
                let o = o.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        o.fetch_sub(1, Ordering::AcqRel);
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    // A connection counts as open until its client closes it: that is when the
                    // client is done with it, whenever the server gets round to closing its end.
                    let upstream = async {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        o.fetch_sub(1, Ordering::AcqRel);
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Ok(Self {
            port,
            open,
            most,
            total,
            task,
        })
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most connections ever open at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::Acquire)
    }

    /// Connections accepted in all.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
