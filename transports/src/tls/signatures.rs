//! The part every certificate verifier of twistor's shares: checking the
//! handshake signature with the provider's algorithms (ring's), which is
//! how a peer proves it holds its certificate's key.
//!
//! A verifier here is a *judge* (what to think of a certificate: chains to
//! a root, has a pinned fingerprint, was seen before...) wrapped in
//! [`Signed`], which implements rustls's verifier traits: the judge's
//! decision, then the signature checks, written once. A judge that must
//! wait for the proof (trust on first use remembers a certificate only
//! once its key is proven) hears of it in [`Judge::proven`].

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// What every judge may hear: the handshake signature made with `cert`'s
/// key has verified.
pub(crate) trait Judge: std::fmt::Debug + Send + Sync {
    /// The peer proved it holds `cert`'s key. An error here fails the
    /// handshake all the same.
    fn proven(&self, _cert: &CertificateDer<'_>) -> Result<(), Error> {
        Ok(())
    }
}

/// Judges a server's certificate (a client's verifier).
pub(crate) trait ServerJudge: Judge {
    /// As [`ServerCertVerifier::verify_server_cert`].
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error>;
}

/// Judges a client's certificate (a server's verifier).
pub(crate) trait ClientJudge: Judge {
    /// As [`ClientCertVerifier::client_auth_mandatory`].
    fn client_auth_mandatory(&self) -> bool;
    /// As [`ClientCertVerifier::verify_client_cert`].
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error>;
}

/// A judge whose peers must also prove their key by the handshake
/// signature: the rustls verifier twistor installs.
#[derive(Debug)]
pub(crate) struct Signed<J> {
    judge: J,
    algs: WebPkiSupportedAlgorithms,
}

impl<J: Judge> Signed<J> {
    /// `judge`, with signatures checked by `provider`'s algorithms.
    pub(crate) fn new(judge: J, provider: &CryptoProvider) -> Signed<J> {
        Signed {
            judge,
            algs: provider.signature_verification_algorithms,
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let valid = verify_tls12_signature(message, cert, dss, &self.algs)?;
        self.judge.proven(cert)?;
        Ok(valid)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let valid = verify_tls13_signature(message, cert, dss, &self.algs)?;
        self.judge.proven(cert)?;
        Ok(valid)
    }
}

impl<J: ServerJudge> ServerCertVerifier for Signed<J> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.judge
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl<J: ClientJudge> ClientCertVerifier for Signed<J> {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.judge.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.judge.verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
