//! TLS for the agent's auth endpoint in tests: a throwaway CA and a server certificate for the
//! host's veth addresses, made with rcgen and written to files that the policy and
//! `portguard open --ca` name, and an HTTPS client that trusts that CA only.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, ServerName},
};
use tempfile::TempDir;

use crate::{
    http::{self, IO_TIMEOUT, Request, Response},
    lab::{HOST_V4, HOST_V6},
    netns::Netns,
};

/// A CA, a server certificate it signed for the host's addresses, and the files they are in.
/// The folder is removed on drop.
pub struct TestTls {
    ca_der: CertificateDer<'static>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    dir: TempDir,
}

impl TestTls {
    /// A certificate for the lab host's IPv4 and IPv6 addresses and `localhost`.
    pub fn for_lab_host() -> anyhow::Result<Self> {
        Self::new(&[HOST_V4.to_string(), HOST_V6.to_string(), "localhost".into()])
    }

    /// A certificate for `names` (IP addresses or DNS names).
    pub fn new(names: &[String]) -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portguard test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
            .context("make the test CA")?;

        let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portguard test host");
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &ca)
            .context("sign the host's certificate")?;

        let dir = tempfile::Builder::new()
            .prefix("pgt-tls-")
            .tempdir()
            .context("make a temp folder")?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            Ok(path)
        };
        Ok(Self {
            ca_der: ca.der().clone(),
            ca: write("ca.pem", &ca.pem())?,
            cert: write("tls.crt", &cert.pem())?,
            key: write("tls.key", &key.serialize_pem())?,
            dir,
        })
    }

    /// The CA certificate (PEM), for `portguard open --ca`.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The server certificate (PEM), for `[auth] tls_cert`.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The server key (PEM), for `[auth] tls_key`.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The folder the files are in; tests may put more there (token files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client configuration that trusts the test CA only.
    pub fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .context("trust the test CA")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Sends `request` over HTTPS from `netns` to `to`, checking the server's certificate
    /// for `to`'s IP address.
    pub fn request(
        &self,
        netns: &Netns,
        to: SocketAddr,
        request: &Request,
    ) -> anyhow::Result<Response> {
        let tcp = netns
            .run(|| TcpStream::connect_timeout(&to, IO_TIMEOUT))?
            .with_context(|| format!("connect to {to} from {}", netns.name()))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::from(to.ip());
        let connection =
            ClientConnection::new(self.client_config()?, name).context("start a TLS connection")?;
        let mut stream = StreamOwned::new(connection, tcp);
        http::exchange(&mut stream, request)
            .with_context(|| format!("{} https://{to}{}", request.method, request.path))
    }
}
