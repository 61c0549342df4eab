//! OAuth app registrations (MISSION A14, C1): which identity provider, which client, which scopes
//! for which use, and what the provider's errors mean for the administrator who has to fix them.
//!
//! Pure: the endpoints of a registration are computed here; the HTTP exchanges live in
//! `mailroom-connect`.

use crate::ValidationError;
use crate::account::{parse_display_text, string_enum};
use crate::webhook::WebhookUrl;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// The kind of identity provider: Microsoft Entra ID (endpoints from the authority and the
    /// tenant), or any OpenID Connect provider (endpoints from its discovery document).
    OAuthProvider { MicrosoftEntra => "microsoft-entra", Oidc => "oidc" }
);

/// Microsoft's public cloud; sovereign clouds have their own (e.g. `https://login.microsoftonline.us`).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Microsoft Graph v1.0 in the public cloud.
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";

/// Delegated Graph permissions: the current-user connector and shared mailboxes over Graph.
pub const GRAPH_DELEGATED_SCOPES: &[&str] = &[
    "User.Read",
    "Mail.ReadWrite",
    "Mail.Send",
    "Mail.Send.Shared",
    "offline_access",
];

/// Delegated SMTP and IMAP access. Microsoft issues a token for one resource at a time, and SMTP
/// and IMAP belong to Exchange Online (`https://outlook.office.com`), not to Graph: the scopes must
/// carry that resource, or the token is a Graph token that Exchange refuses
/// (learn.microsoft.com, "Authenticate an IMAP, POP or SMTP connection using OAuth").
pub const ENTRA_MAIL_SCOPES: &[&str] = &[
    "openid",
    "offline_access",
    "email",
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
];

/// App-only (client-credentials) access to Graph: whatever application permissions an admin granted.
pub const GRAPH_APP_SCOPES: &[&str] = &["https://graph.microsoft.com/.default"];

/// Default scopes of a generic OpenID Connect provider's mailbox connection.
pub const OIDC_MAIL_SCOPES: &[&str] = &["openid", "offline_access", "email"];

/// The scopes asked for, per use of the registration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSets {
    /// Delegated Microsoft Graph access (current user, shared mailboxes over Graph).
    pub graph: Vec<String>,
    /// Delegated SMTP and IMAP access (XOAUTH2).
    pub mail: Vec<String>,
    /// App-only access (client credentials).
    pub app: Vec<String>,
}

fn owned(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

impl ScopeSets {
    pub fn defaults(provider: OAuthProvider) -> Self {
        match provider {
            OAuthProvider::MicrosoftEntra => Self {
                graph: owned(GRAPH_DELEGATED_SCOPES),
                mail: owned(ENTRA_MAIL_SCOPES),
                app: owned(GRAPH_APP_SCOPES),
            },
            OAuthProvider::Oidc => Self {
                graph: Vec::new(),
                mail: owned(OIDC_MAIL_SCOPES),
                app: Vec::new(),
            },
        }
    }

    /// Each scope one token of printable ASCII without spaces (RFC 6749 §3.3), at most 30 per use.
    pub fn validate(self) -> Result<Self, ValidationError> {
        for (name, set) in [
            ("scopes.graph", &self.graph),
            ("scopes.mail", &self.mail),
            ("scopes.app", &self.app),
        ] {
            if set.len() > 30 {
                return Err(ValidationError::new(name, "at most 30 scopes"));
            }
            for scope in set {
                let valid = !scope.is_empty()
                    && scope.len() <= 200
                    && scope.bytes().all(|b| {
                        b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
                    });
                if !valid {
                    return Err(ValidationError::new(
                        name,
                        format!(
                            "{scope:?} is not a scope (printable characters, no spaces, quotes or backslashes)"
                        ),
                    ));
                }
            }
        }
        Ok(self)
    }
}

string_enum!(
    /// What a registration's tokens are for.
    ScopeUse { Graph => "graph", Mail => "mail", App => "app" }
);

impl ScopeSets {
    pub fn for_use(&self, use_: ScopeUse) -> &[String] {
        match use_ {
            ScopeUse::Graph => &self.graph,
            ScopeUse::Mail => &self.mail,
            ScopeUse::App => &self.app,
        }
    }
}

/// A URL given for a registration: `https`, or `http` only on this machine (a developer's provider).
pub fn parse_endpoint_url(field: &str, raw: &str) -> Result<String, ValidationError> {
    let url = WebhookUrl::parse(raw).map_err(|e| e.at(field))?;
    let local = matches!(url.host(), "localhost" | "127.0.0.1" | "::1");
    if !url.as_str().to_ascii_lowercase().starts_with("https://") && !local {
        return Err(ValidationError::new(
            field,
            "must be an https URL (http only on localhost): client secrets and tokens travel over it",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A tenant: a GUID, a verified domain, or `organizations` / `common` / `consumers`.
pub fn parse_tenant(raw: &str) -> Result<String, ValidationError> {
    let tenant = raw.trim().to_ascii_lowercase();
    let valid = !tenant.is_empty()
        && tenant.len() <= 253
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(tenant)
    } else {
        Err(ValidationError::new(
            "tenant",
            format!("{raw:?} is not a tenant ID, a tenant domain, or organizations/common"),
        ))
    }
}

/// A validated registration (without its secret, which is handled apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRegistrationSettings {
    pub name: String,
    pub provider: OAuthProvider,
    pub client_id: String,
    pub tenant: Option<String>,
    pub redirect_uri: String,
    pub authority: String,
    pub graph_base_url: String,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub scopes: ScopeSets,
}

/// The unchecked fields of a registration, as an API or CLI caller gives them.
#[derive(Debug, Clone, Default)]
pub struct AppRegistrationDraft {
    pub name: String,
    pub provider: String,
    pub client_id: String,
    pub tenant: Option<String>,
    pub redirect_uri: String,
    pub authority: Option<String>,
    pub graph_base_url: Option<String>,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub scopes: Option<ScopeSets>,
}

impl AppRegistrationSettings {
    pub fn parse(draft: AppRegistrationDraft) -> Result<Self, ValidationError> {
        let provider: OAuthProvider = draft
            .provider
            .parse()
            .map_err(|e: ValidationError| e.at("provider"))?;
        let name = parse_display_text("name", &draft.name)?;
        let client_id = draft.client_id.trim().to_owned();
        if client_id.is_empty()
            || client_id.len() > 200
            || client_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ValidationError::new(
                "client_id",
                "must be the application (client) ID: one word of at most 200 characters",
            ));
        }
        let tenant = draft.tenant.as_deref().map(parse_tenant).transpose()?;
        let optional = |field: &str, raw: Option<&str>| {
            raw.filter(|r| !r.trim().is_empty())
                .map(|r| parse_endpoint_url(field, r))
                .transpose()
        };
        let discovery_url = optional("discovery_url", draft.discovery_url.as_deref())?;
        match provider {
            OAuthProvider::MicrosoftEntra if tenant.is_none() => {
                return Err(ValidationError::new(
                    "tenant",
                    "a Microsoft Entra registration needs its tenant (ID or domain, as on the app's Overview page)",
                ));
            }
            OAuthProvider::Oidc if discovery_url.is_none() => {
                return Err(ValidationError::new(
                    "discovery_url",
                    "an OpenID Connect registration needs the provider's discovery URL (…/.well-known/openid-configuration)",
                ));
            }
            _ => {}
        }
        Ok(Self {
            name,
            provider,
            client_id,
            tenant,
            redirect_uri: parse_endpoint_url("redirect_uri", &draft.redirect_uri)?,
            authority: optional("authority", draft.authority.as_deref())?
                .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned()),
            graph_base_url: optional("graph_base_url", draft.graph_base_url.as_deref())?
                .unwrap_or_else(|| DEFAULT_GRAPH_BASE_URL.to_owned()),
            discovery_url,
            authorization_endpoint: optional(
                "authorization_endpoint",
                draft.authorization_endpoint.as_deref(),
            )?,
            token_endpoint: optional("token_endpoint", draft.token_endpoint.as_deref())?,
            scopes: draft
                .scopes
                .unwrap_or_else(|| ScopeSets::defaults(provider))
                .validate()?,
        })
    }

    /// Where the provider describes itself (OpenID Connect discovery).
    pub fn discovery_document_url(&self) -> String {
        match (&self.discovery_url, self.provider) {
            (Some(url), _) => url.clone(),
            (None, _) => format!(
                "{}/{}/v2.0/.well-known/openid-configuration",
                self.authority,
                self.tenant.as_deref().unwrap_or("organizations")
            ),
        }
    }

    /// The authorization and token endpoints known without discovery (Entra's are fixed by the
    /// authority and tenant; an override wins).
    pub fn known_endpoints(&self) -> (Option<String>, Option<String>) {
        let entra = |path: &str| {
            (self.provider == OAuthProvider::MicrosoftEntra && self.discovery_url.is_none()).then(
                || {
                    format!(
                        "{}/{}/oauth2/v2.0/{path}",
                        self.authority,
                        self.tenant.as_deref().unwrap_or("organizations")
                    )
                },
            )
        };
        (
            self.authorization_endpoint
                .clone()
                .or_else(|| entra("authorize")),
            self.token_endpoint.clone().or_else(|| entra("token")),
        )
    }

    /// The link an admin of the tenant opens to grant the application's permissions for everyone
    /// (Microsoft identity platform, "Request the permissions from a directory admin").
    pub fn admin_consent_url(&self) -> Option<String> {
        (self.provider == OAuthProvider::MicrosoftEntra).then(|| {
            format!(
                "{}/{}/v2.0/adminconsent?client_id={}&scope={}&redirect_uri={}",
                self.authority,
                self.tenant.as_deref().unwrap_or("organizations"),
                form_encode(&self.client_id),
                form_encode(&self.scopes.app.join(" ")),
                form_encode(&self.redirect_uri)
            )
        })
    }

    /// Where the stored client secret may be presented: it stays with these (see
    /// [`crate::account::CredentialEndpoint`]); changing any needs the secret again.
    pub fn secret_binding(&self) -> Vec<(&'static str, String)> {
        vec![
            ("provider", self.provider.as_str().to_owned()),
            ("client_id", self.client_id.clone()),
            ("tenant", self.tenant.clone().unwrap_or_default()),
            ("authority", self.authority.clone()),
            (
                "discovery_url",
                self.discovery_url.clone().unwrap_or_default(),
            ),
            (
                "token_endpoint",
                self.token_endpoint.clone().unwrap_or_default(),
            ),
        ]
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 appendix B).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A form body from its fields.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What an administrator should do about a Microsoft Entra error (the `AADSTS` codes of the
/// Microsoft identity platform's "Error codes" reference), or `None` for codes without advice.
pub fn entra_advice(code: u32) -> Option<&'static str> {
    Some(match code {
        7000215 => {
            "The client secret is wrong. Give the secret's Value, not its Secret ID (both are shown on the app's \"Certificates & secrets\" page)."
        }
        7000222 => {
            "The client secret has expired. Create a new secret under \"Certificates & secrets\" and give its Value here."
        }
        65001 => {
            "Nobody has consented to the permissions. A tenant admin must grant them: open the admin consent link."
        }
        700016 => {
            "The application ID is not found in this tenant. Check the client ID and the tenant (Directory ID), or have an admin of the tenant consent to the application."
        }
        50011 => {
            "The redirect URI is not registered for the application. Add this registration's redirect URI under the app's \"Authentication\" page, exactly."
        }
        90002 => "The tenant does not exist. Check the tenant ID or domain.",
        7000218 => {
            "The request needs a client secret: the app registration is not allowed to act as a public client."
        }
        70011 => "A scope is not valid for this application. Check the scopes.",
        _ => return None,
    })
}

/// The first `AADSTS<digits>` code in a text (Entra error descriptions begin with it).
pub fn aadsts_code(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra() -> AppRegistrationDraft {
        AppRegistrationDraft {
            name: "Contoso".into(),
            provider: "microsoft-entra".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            tenant: Some("Contoso.onmicrosoft.com".into()),
            redirect_uri: "https://mail.contoso.com/oauth/callback".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_entra_registration_derives_its_endpoints_from_authority_and_tenant() {
        let settings = AppRegistrationSettings::parse(entra()).unwrap();
        assert_eq!(settings.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
        let (authorize, token) = settings.known_endpoints();
        assert_eq!(
            token.unwrap(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(authorize.unwrap().ends_with("/oauth2/v2.0/authorize"));
        assert_eq!(
            settings.discovery_document_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            settings.scopes,
            ScopeSets::defaults(OAuthProvider::MicrosoftEntra)
        );
        let consent = settings.admin_consent_url().unwrap();
        assert!(
            consent.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"),
            "{consent}"
        );
    }

    #[test]
    fn a_registration_without_what_its_provider_needs_is_refused() {
        let no_tenant = AppRegistrationDraft {
            tenant: None,
            ..entra()
        };
        assert_eq!(
            AppRegistrationSettings::parse(no_tenant).unwrap_err().field,
            "tenant"
        );
        let oidc = AppRegistrationDraft {
            provider: "oidc".into(),
            tenant: None,
            ..entra()
        };
        assert_eq!(
            AppRegistrationSettings::parse(oidc).unwrap_err().field,
            "discovery_url"
        );
        let plain_http = AppRegistrationDraft {
            redirect_uri: "http://mail.contoso.com/cb".into(),
            ..entra()
        };
        assert_eq!(
            AppRegistrationSettings::parse(plain_http)
                .unwrap_err()
                .field,
            "redirect_uri"
        );
        let local_http = AppRegistrationDraft {
            redirect_uri: "http://127.0.0.1:8025/oauth/callback".into(),
            ..entra()
        };
        assert!(AppRegistrationSettings::parse(local_http).is_ok());
        let bad_scope = AppRegistrationDraft {
            scopes: Some(ScopeSets {
                graph: vec!["Mail.Send Mail.Read".into()],
                mail: vec![],
                app: vec![],
            }),
            ..entra()
        };
        assert_eq!(
            AppRegistrationSettings::parse(bad_scope).unwrap_err().field,
            "scopes.graph"
        );
    }

    #[test]
    fn entra_error_codes_are_read_from_descriptions_and_explained() {
        let text = "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID";
        assert_eq!(aadsts_code(text), Some(7000215));
        assert!(
            entra_advice(7000215)
                .unwrap()
                .contains("Value, not its Secret ID")
        );
        assert!(entra_advice(65001).unwrap().contains("admin consent"));
        assert_eq!(aadsts_code("invalid_client"), None);
        assert_eq!(entra_advice(1), None);
    }

    #[test]
    fn the_pkce_challenge_matches_the_rfc_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            form_body(&[("grant_type", "client_credentials"), ("scope", "x y")]),
            "grant_type=client_credentials&scope=x+y"
        );
    }
}
