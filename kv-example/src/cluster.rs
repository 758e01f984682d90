//! Who is in the cluster and where: a member's address as Rafter stores it
//! in the configuration is `RAFT_ADDR/HTTP_ADDR`, so every node knows every
//! other's HTTP address from the replicated configuration alone (that is
//! where followers forward to). The QUIC transport sees only the Raft half.

use std::collections::BTreeMap;

use rafter::{Message, NodeId, RaftNetwork};

/// One member's two addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddr {
    /// Where its Raft (QUIC) endpoint listens, `host:port`.
    pub raft: String,
    /// Where its HTTP API listens, `host:port`.
    pub http: String,
}

impl MemberAddr {
    /// Parses `RAFT_ADDR/HTTP_ADDR`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (raft, http) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not RAFT_ADDR/HTTP_ADDR"))?;
        let http = http.trim_start_matches("http://").trim_end_matches('/');
        if raft.is_empty() || http.is_empty() || raft.contains('/') || http.contains('/') {
            return Err(format!("{text:?} is not RAFT_ADDR/HTTP_ADDR"));
        }
        Ok(Self {
            raft: raft.to_owned(),
            http: http.to_owned(),
        })
    }

    /// The form stored in the configuration.
    pub fn encode(&self) -> String {
        format!("{}/{}", self.raft, self.http)
    }
}

/// Parses `--peers`: `ID=RAFT_ADDR/HTTP_ADDR` entries separated by commas.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, MemberAddr>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer {item:?} is not ID=RAFT_ADDR/HTTP_ADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("peer id {id:?} is not a positive integer"))?;
        if peers.insert(id, MemberAddr::parse(addr.trim())?).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

/// A stable cluster id from the founding members (etcd derives its own
/// from the initial cluster the same way): FNV-1a over ids and addresses.
pub fn cluster_id(founders: &BTreeMap<NodeId, MemberAddr>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in founders {
        for byte in id
            .to_be_bytes()
            .iter()
            .chain(addr.raft.as_bytes())
            .chain(b"/")
            .chain(addr.http.as_bytes())
        {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash.max(1)
}

/// The member addresses as the configuration stores them.
pub fn encode_members(members: &BTreeMap<NodeId, MemberAddr>) -> BTreeMap<NodeId, String> {
    members.iter().map(|(id, a)| (*id, a.encode())).collect()
}

/// A `RaftNetwork` that hands the transport the Raft half of each address.
#[derive(Debug)]
pub struct RaftHalf<N> {
    inner: N,
    /// Where the members are while this node is in no configuration (it is
    /// joining): without them it could not answer the leader adding it.
    /// Invariant: used only while the configuration names no node.
    seeds: BTreeMap<NodeId, String>,
}

impl<N> RaftHalf<N> {
    /// Wraps a transport.
    pub fn new(inner: N) -> Self {
        Self {
            inner,
            seeds: BTreeMap::new(),
        }
    }

    /// Wraps a transport that reaches `seeds` until a configuration names
    /// some node.
    pub fn with_seeds(inner: N, seeds: &BTreeMap<NodeId, MemberAddr>) -> Self {
        Self {
            inner,
            seeds: encode_members(seeds),
        }
    }
}

impl<N: RaftNetwork> RaftNetwork for RaftHalf<N> {
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        self.inner.send(to, messages).await
    }

    async fn set_members(&mut self, nodes: &BTreeMap<NodeId, String>) {
        let nodes = if nodes.is_empty() { &self.seeds } else { nodes };
        let raft: BTreeMap<NodeId, String> = nodes
            .iter()
            .map(|(id, addr)| {
                let raft = MemberAddr::parse(addr).map_or_else(|_| addr.clone(), |a| a.raft);
                (*id, raft)
            })
            .collect();
        self.inner.set_members(&raft).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse_what_they_should() {
        let peers =
            parse_peers("1=127.0.0.1:7001/127.0.0.1:8001, 2=h2:7001/http://h2:8001").unwrap();
        assert_eq!(peers[&2].http, "h2:8001");
        assert_eq!(peers[&1].encode(), "127.0.0.1:7001/127.0.0.1:8001");
        for bad in ["", "1=a", "0=a/b", "x=a/b", "1=a/b,1=c/d", "1=/b", "1=a/"] {
            assert!(parse_peers(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cluster_id_depends_on_the_founders() {
        let a = parse_peers("1=a:1/a:2,2=b:1/b:2").unwrap();
        let b = parse_peers("1=a:1/a:2,2=b:1/b:3").unwrap();
        assert_eq!(cluster_id(&a), cluster_id(&a.clone()));
        assert_ne!(cluster_id(&a), cluster_id(&b));
    }
}
