//! The pinned third-party MCP servers the proxy tests stand in front of (installed by
//! `make e2e-deps` from tests/deps).

use std::time::Duration;

use crate::{node_modules, node22};

/// `node dist/index.js stdio` of the pinned server-everything.
pub fn everything() -> Vec<String> {
    let script = node_modules().join("@modelcontextprotocol/server-everything/dist/index.js");
    [node22(), script]
        .map(|p| p.display().to_string())
        .into_iter()
        .chain(["stdio".to_owned()])
        .collect()
}

/// server-everything over Streamable HTTP on `port`, killed when dropped.
pub struct HttpEverything(std::process::Child);

impl HttpEverything {
    /// Starts it and waits until it listens.
    pub fn start(port: u16) -> Self {
        let argv = everything();
        let child = std::process::Command::new(&argv[0])
            .arg(&argv[1])
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "server-everything does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for HttpEverything {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
