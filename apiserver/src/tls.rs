//! PKI on first start (a CA, the serving certificate, the admin client certificate), the admin kubeconfig,
//! and the rustls server configuration that authenticates client certificates signed by our CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("loading {0}: {1}")]
    Pem(PathBuf, rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn write(&self, f: &str, data: &str) -> Result<(), TlsError> {
        let p = self.path(f);
        std::fs::write(&p, data).map_err(|e| TlsError::Io(p, e))
    }

    /// Creates the CA and certificates unless they exist (so restarts keep the same kubeconfig valid).
    pub fn ensure(dir: &Path, hostname: &str) -> Result<Pki, TlsError> {
        let pki = Pki { dir: dir.to_path_buf() };
        std::fs::create_dir_all(dir).map_err(|e| TlsError::Io(dir.to_path_buf(), e))?;
        if pki.path("ca.crt").exists() {
            return Ok(pki);
        }
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, "rudder-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let ca_cert = ca.self_signed(&ca_key)?;

        let mut sans = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "kubernetes".to_string(),
        ];
        if !hostname.is_empty() && !sans.iter().any(|s| s == hostname) {
            sans.push(hostname.to_string());
        }
        sans.push("kubernetes.default.svc".to_string());
        let srv_key = KeyPair::generate()?;
        let mut srv = CertificateParams::new(sans)?;
        srv.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        srv.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let srv_cert = srv.signed_by(&srv_key, &ca_cert, &ca_key)?;

        let adm_key = KeyPair::generate()?;
        let mut adm = CertificateParams::new(Vec::<String>::new())?;
        adm.distinguished_name.push(DnType::CommonName, "kubernetes-admin");
        adm.distinguished_name.push(DnType::OrganizationName, "system:masters");
        adm.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        adm.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let adm_cert = adm.signed_by(&adm_key, &ca_cert, &ca_key)?;

        pki.write("ca.key", &ca_key.serialize_pem())?;
        pki.write("apiserver.crt", &srv_cert.pem())?;
        pki.write("apiserver.key", &srv_key.serialize_pem())?;
        pki.write("admin.crt", &adm_cert.pem())?;
        pki.write("admin.key", &adm_key.serialize_pem())?;
        // Written last: its presence means the set is complete.
        pki.write("ca.crt", &ca_cert.pem())?;
        Ok(pki)
    }

    fn read(&self, f: &str) -> Result<String, TlsError> {
        let p = self.path(f);
        std::fs::read_to_string(&p).map_err(|e| TlsError::Io(p, e))
    }

    /// An admin kubeconfig pointing at `server`.
    pub fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<(), TlsError> {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rudder\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {}\ncontexts:\n- name: rudder\n  context:\n    cluster: rudder\n    \
             user: kubernetes-admin\ncurrent-context: rudder\nusers:\n- name: kubernetes-admin\n  user:\n    \
             client-certificate-data: {}\n    client-key-data: {}\n",
            b64(self.read("ca.crt")?),
            b64(self.read("admin.crt")?),
            b64(self.read("admin.key")?),
        );
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| TlsError::Io(d.to_path_buf(), e))?;
        }
        std::fs::write(path, text).map_err(|e| TlsError::Io(path.to_path_buf(), e))
    }

    /// Server config: client certificates are optional at the TLS layer (health checks need none) but, when
    /// given, must chain to our CA; the HTTP layer rejects unauthenticated API requests.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca_path = self.path("ca.crt");
        for c in CertificateDer::pem_file_iter(&ca_path).map_err(|e| TlsError::Pem(ca_path.clone(), e))? {
            roots.add(c.map_err(|e| TlsError::Pem(ca_path.clone(), e))?)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let crt = self.path("apiserver.crt");
        let chain = CertificateDer::pem_file_iter(&crt)
            .map_err(|e| TlsError::Pem(crt.clone(), e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(crt.clone(), e))?;
        let keyp = self.path("apiserver.key");
        let key = PrivateKeyDer::from_pem_file(&keyp).map_err(|e| TlsError::Pem(keyp.clone(), e))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
