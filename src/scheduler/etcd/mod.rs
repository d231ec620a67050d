//! The scheduler's etcd connection (`state.etcd`): the shared registry
//! ([`registry::EtcdRegistry`]) and leadership ([`leadership`]) of several schedulers of one
//! mesh.
//!
//! The client runs on a small runtime of its own, so the same connection answers async code
//! (leadership) and blocking code (the registry, which the `proxy mesh` commands and the
//! scheduler's blocking join path use) without either waiting on the other's executor.
//! Every call has a deadline: a cluster that lost quorum fails calls, it does not hang them.

pub mod leadership;
pub mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcdv3client::grpc::TonicClient;
use etcdv3client::pb;

use crate::config::scheduler::EtcdConfig;

/// The client type every call gets.
pub type Client = etcdv3client::Client<TonicClient>;

/// How long one call to etcd may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A failed etcd call.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The cluster answered with an error or could not be reached.
    #[error("etcd: {0}")]
    Call(String),
    /// No answer within the call's deadline.
    #[error("etcd did not answer within {0:?} (is a majority of its members up and reachable?)")]
    Timeout(Duration),
}

/// Owns the client's runtime; shut down without blocking, so it may be dropped anywhere.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connection to an etcd cluster, cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    runtime: Arc<Runtime>,
    handle: tokio::runtime::Handle,
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client for `config`'s endpoints. Connects lazily: members that are down now are
    /// tried again on later calls, and calls go to the members that answer.
    pub fn connect(config: &EtcdConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let mut endpoints = Vec::new();
        for url in &config.endpoints {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("state.etcd: `{url}`: {e}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            endpoints.push(endpoint);
        }
        // The balanced channel starts its discovery task on the runtime it is made in.
        let channel = {
            let _entered = handle.enter();
            tonic::transport::Channel::balance_list(endpoints.into_iter())
        };
        let client = etcdv3client::Client::with_service(TonicClient::new(channel));
        Ok(Self { runtime: Arc::new(Runtime(Some(runtime))), handle, client, prefix: config.prefix.clone() })
    }

    /// The key `suffix` under this mesh's prefix.
    pub fn key(&self, suffix: &str) -> Vec<u8> {
        format!("{}/{suffix}", self.prefix).into_bytes()
    }

    /// Runs `call` with a client on the connection's runtime, within [`CALL_TIMEOUT`].
    pub async fn call<T, F>(&self, call: impl FnOnce(Client) -> F) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcdv3client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let _keep = self.runtime.clone();
        let future = call(self.client.clone());
        let task = self.handle.spawn(async move { tokio::time::timeout(CALL_TIMEOUT, future).await });
        match task.await {
            Ok(Ok(result)) => result.map_err(|e| EtcdError::Call(e.to_string())),
            Ok(Err(_)) => Err(EtcdError::Timeout(CALL_TIMEOUT)),
            Err(e) => Err(EtcdError::Call(format!("client task failed: {e}"))),
        }
    }

    /// [`Etcd::call`] for blocking code: waits on this thread (never on a runtime's).
    pub fn call_blocking<T, F>(&self, call: impl FnOnce(Client) -> F) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcdv3client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let future = call(self.client.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(CALL_TIMEOUT, future).await);
        });
        match rx.recv() {
            Ok(Ok(result)) => result.map_err(|e| EtcdError::Call(e.to_string())),
            Ok(Err(_)) => Err(EtcdError::Timeout(CALL_TIMEOUT)),
            Err(_) => Err(EtcdError::Call("the client's runtime stopped".into())),
        }
    }
}

/// The end of the range of every key starting with `prefix` (etcd's prefix convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A put as a transaction operation.
pub fn put_op(key: Vec<u8>, value: Vec<u8>, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

/// A delete of one key as a transaction operation.
pub fn delete_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key,
            ..Default::default()
        })),
    }
}

/// A read of one key as a transaction operation.
pub fn get_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest { key, ..Default::default() })),
    }
}

/// "`key`'s version is `version`" (0: the key does not exist).
pub fn version_is(key: Vec<u8>, version: i64) -> pb::Compare {
    equal(key, pb::compare::CompareTarget::Version, pb::compare::TargetUnion::Version(version))
}

/// "`key` was created at `revision`": the key is still the one a leader wrote.
pub fn created_at(key: Vec<u8>, revision: i64) -> pb::Compare {
    equal(key, pb::compare::CompareTarget::Create, pb::compare::TargetUnion::CreateRevision(revision))
}

/// "`key`'s `target` equals `value`".
fn equal(key: Vec<u8>, target: pb::compare::CompareTarget, value: pb::compare::TargetUnion) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_that_starts_with_it() {
        assert_eq!(prefix_end(b"/proxy/registry/"), b"/proxy/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
