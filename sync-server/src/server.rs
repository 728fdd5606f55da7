//! Starting and stopping the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{router_with, AppState};
use crate::config::ServerConfig;
use crate::error::Result;
use crate::storage::Store;

/// A relay serving in the background of the current tokio runtime.
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    store: Store,
}

/// Opens (and migrates) the storage, binds `config.listen` (port 0 picks a free port) and serves.
pub async fn start(config: ServerConfig) -> Result<RunningServer> {
    let store = Store::open(&config.storage, &config.limits).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(store.clone(), config.limits.clone()));
    // The console's devices sync with this relay over loopback.
    let console = match &config.console {
        Some(c) => {
            let url = format!("http://127.0.0.1:{}", addr.port());
            crate::console::router(crate::console::ConsoleState::new(
                store.clone(),
                c.clone(),
                url,
            )?)
        }
        None => axum::Router::new(),
    };
    // With the client's address in each request: failed authentications are limited per address.
    let app = router_with(state, console).into_make_service_with_connect_info::<SocketAddr>();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, backend = store.backend_name(), "relay listening");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
        store,
    })
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets requests in flight finish (their pushes commit), then
    /// stops the storage writer.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
        self.store.close().await;
        tracing::info!("relay stopped");
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
