//! The rmcp baseline of the load benchmark: the two document tools of the company-info sample on
//! the official Rust MCP SDK (rmcp), Streamable HTTP, stateless, JSON responses, no authentication.
//!
//! `palisade-bench-rmcp LISTEN PUBLIC_DIR CONFIDENTIAL_DIR` serves `/mcp` on `LISTEN` (loopback);
//! `get_public_info` and `get_confidential_info` return the documents of the two collections
//! (folders, one file per document) as Palisade's `readAll` tools do, read once at start-up. The
//! router and the documents are built once and shared: the per-request service factory of the
//! stateless transport only clones two `Arc`s.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};

struct Documents {
    public: String,
    confidential: String,
}

#[derive(Clone)]
struct CompanyInfo {
    documents: Arc<Documents>,
    router: Arc<ToolRouter<CompanyInfo>>,
}

#[tool_router]
impl CompanyInfo {
    #[tool(description = "Public company information")]
    fn get_public_info(&self) -> String {
        self.documents.public.clone()
    }

    #[tool(description = "Confidential strategy")]
    fn get_confidential_info(&self) -> String {
        self.documents.confidential.clone()
    }
}

#[tool_handler(router = self.router, name = "rmcp-baseline")]
impl ServerHandler for CompanyInfo {}

/// A collection as Palisade's `readAll` tools return it.
fn read_all(folder: &str) -> String {
    let mut paths: Vec<_> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("cannot read {folder}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy();
            let content =
                std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            format!("<document name=\"{name}\">\n{}\n</document>", content.trim_end())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, public, confidential] = args.as_slice() else {
        eprintln!("usage: palisade-bench-rmcp LISTEN PUBLIC_DIR CONFIDENTIAL_DIR");
        std::process::exit(2);
    };
    let server = CompanyInfo {
        documents: Arc::new(Documents {
            public: read_all(public),
            confidential: read_all(confidential),
        }),
        router: Arc::new(CompanyInfo::tool_router()),
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None);
    let service: StreamableHttpService<CompanyInfo, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .expect("cannot listen");
    axum::serve(listener, app).await.expect("server error");
}
