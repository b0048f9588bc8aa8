//! Where a proxy's upstream is, as its client spans say it (`network.transport`, and for an HTTP
//! upstream `server.address` and `server.port`, as the MCP and network conventions name them).

use opentelemetry::KeyValue;

/// The attributes of every upstream call's span: worked out once, when the proxy is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamPeer {
    attributes: Vec<KeyValue>,
}

impl UpstreamPeer {
    /// An upstream reached at `url` (Streamable HTTP, over TCP).
    pub fn http(url: &str) -> Self {
        let mut attributes = vec![KeyValue::new("network.transport", "tcp")];
        if let Ok(url) = reqwest::Url::parse(url) {
            if let Some(host) = url.host_str() {
                attributes.push(KeyValue::new("server.address", host.to_owned()));
            }
            if let Some(port) = url.port_or_known_default() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        Self { attributes }
    }

    /// An upstream on the standard input and output of a child process.
    pub fn child_process() -> Self {
        Self {
            attributes: vec![KeyValue::new("network.transport", "pipe")],
        }
    }

    /// An upstream behind a Unix socket (`palisade-stdio-shim` in a container of its own).
    pub fn unix_socket() -> Self {
        Self {
            attributes: vec![KeyValue::new("network.transport", "unix")],
        }
    }

    /// The attributes, for a span.
    pub(super) fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_upstream_is_named_by_its_host_and_port_the_scheme_s_when_the_url_has_none() {
        let attributes = |peer: UpstreamPeer| {
            peer.attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            attributes(UpstreamPeer::http("http://10.0.0.7:8080/mcp")),
            ["network.transport=tcp", "server.address=10.0.0.7", "server.port=8080"]
        );
        assert_eq!(
            attributes(UpstreamPeer::http("https://mcp.example.com/mcp")),
            [
                "network.transport=tcp",
                "server.address=mcp.example.com",
                "server.port=443"
            ]
        );
        assert_eq!(attributes(UpstreamPeer::child_process()), ["network.transport=pipe"]);
        assert_eq!(attributes(UpstreamPeer::unix_socket()), ["network.transport=unix"]);
    }
}
