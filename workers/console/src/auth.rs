//! Who may use the console, and how a login is kept.
//!
//! Users come from `[[console.users]]` (name, role, an Argon2id PHC hash that
//! `simflow console hash-password` makes); no user and no password ship with simflow. Two
//! roles: a `viewer` reads every page; an `operator` also replays and discards dead letters.
//! A login makes a session in this process: a random token in an `HttpOnly`, `SameSite=Strict`
//! cookie, ending after `[console] session_minutes` or at logout (and when the process
//! restarts). Every state-changing form carries the session's CSRF token, compared in constant
//! time; the login form carries one tied to a short-lived cookie of its own (double submit).
//! A wrong user and a wrong password get the same answer after the same work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::Console;
use crate::html::{self, esc};

/// The session cookie.
pub const SESSION_COOKIE: &str = "simflow_console";
/// The login form's CSRF cookie.
const LOGIN_COOKIE: &str = "simflow_console_login";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also replays and discards dead letters.
    Operator,
}

impl Role {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One configured user.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Argon2id hash in PHC form (`$argon2id$v=19$…`).
    pub password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"<hash>")
            .finish()
    }
}

impl User {
    /// Checks the entry: a name and a hash that parses.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.name.trim().is_empty(),
            "[console] users: a user has no name"
        );
        PasswordHash::new(&self.password_hash).map_err(|error| {
            anyhow::anyhow!(
                "[console] users: the password hash of {} is not a PHC string: {error}",
                self.name
            )
        })?;
        Ok(())
    }
}

/// Hashes a password for the configuration (Argon2id with the crate's defaults, random salt).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| anyhow::anyhow!("making a salt: {error}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))
}

/// A hash of nothing, verified against when the user is unknown (same work as a real user).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy").unwrap_or_default())
}

/// The user with this name and password, if both are right.
fn check_login<'a>(users: &'a [User], name: &str, password: &str) -> Option<&'a User> {
    let user = users.iter().find(|user| user.name == name);
    let hash = user.map_or(decoy_hash(), |user| user.password_hash.as_str());
    let verified = PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    });
    user.filter(|_| verified)
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Login name.
    pub user: String,
    /// Role.
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    expires_at: DateTime<Utc>,
}

impl Session {
    /// Whether the user may replay and discard.
    pub fn may_operate(&self) -> bool {
        self.role == Role::Operator
    }
}

/// The sessions of this process, by cookie token.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    by_token: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start(&self, user: &User, minutes: u64) -> String {
        let token = random_token();
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: random_token(),
            expires_at: Utc::now() + Duration::minutes(i64::try_from(minutes).unwrap_or(480)),
        };
        let mut sessions = self.lock();
        sessions.retain(|_, session| session.expires_at > Utc::now());
        sessions.insert(token.clone(), session);
        token
    }

    fn find(&self, token: &str) -> Option<Session> {
        self.lock()
            .get(token)
            .filter(|session| session.expires_at > Utc::now())
            .cloned()
    }

    fn end(&self, token: &str) {
        self.lock().remove(token);
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Compares two tokens in constant time.
pub fn same_token(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(console: &Console, name: &str, value: &str, max_age_seconds: u64) -> HeaderValue {
    let secure = if console.console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The request's session, or the answer to give instead (to the login page).
pub fn session(console: &Console, headers: &HeaderMap) -> Result<Session, Response> {
    cookie(headers, SESSION_COOKIE)
        .and_then(|token| console.sessions.find(&token))
        .ok_or_else(|| Redirect::to("/login").into_response())
}

/// The request's session if it may operate and its form's CSRF token is right; else the
/// answer to give.
pub fn operator(console: &Console, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let session = session(console, headers)?;
    if !same_token(&session.csrf, csrf) {
        return Err((
            StatusCode::FORBIDDEN,
            "the form is stale or forged (CSRF token)",
        )
            .into_response());
    }
    if !session.may_operate() {
        return Err(forbidden(&session));
    }
    Ok(session)
}

/// The page for a viewer who tried an operator's action.
pub fn forbidden(session: &Session) -> Response {
    (
        StatusCode::FORBIDDEN,
        html::page(
            "Not allowed",
            Some(session),
            "<p class=\"bad\">只有运维操作员可以执行此操作 / Only an operator may do this.</p>",
        ),
    )
        .into_response()
}

/// `GET /login`.
pub async fn login_page(State(console): State<Arc<Console>>) -> Response {
    login_form(&console, None)
}

fn login_form(console: &Console, error: Option<&str>) -> Response {
    let token = random_token();
    let error = error
        .map(|error| format!("<p class=\"bad\">{}</p>", esc(error)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/login\" class=\"login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label>用户 / User <input name=\"user\" id=\"user\" autocomplete=\"username\" required></label>\
         <label>密码 / Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"login\">登录 / Log in</button></form>"
    );
    let mut response = html::page("Log in", None, &body).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console, LOGIN_COOKIE, &token, 600),
    );
    response
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

/// `POST /login`.
pub async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_token(&expected, &form.csrf) {
        return login_form(
            &console,
            Some("登录表单已过期，请重试 / The login form expired; try again"),
        );
    }
    let users = console.console.users.clone();
    let (name, password) = (form.user.clone(), form.password.clone());
    // Argon2 is deliberately slow: keep it off the async workers.
    let user = tokio::task::spawn_blocking(move || check_login(&users, &name, &password).cloned())
        .await
        .ok()
        .flatten();
    let Some(user) = user else {
        tracing::warn!(user = %form.user, "console login refused");
        return login_form(&console, Some("用户名或密码错误 / Wrong user or password"));
    };
    tracing::info!(user = %user.name, role = user.role.name(), "console login");
    let token = console
        .sessions
        .start(&user, console.console.session_minutes);
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &console,
            SESSION_COOKIE,
            &token,
            console.console.session_minutes * 60,
        ),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console, LOGIN_COOKIE, "", 0),
    );
    response
}

/// The logout form.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout`.
pub async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Some(session) = console.sessions.find(&token)
        && same_token(&session.csrf, &form.csrf)
    {
        console.sessions.end(&token);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, "", 0),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, password: &str) -> User {
        User {
            name: name.to_owned(),
            role,
            password_hash: hash_password(password).expect("hash"),
        }
    }

    #[test]
    fn a_login_needs_the_right_user_and_the_right_password() {
        let users = vec![
            user("ops", Role::Operator, "correct horse"),
            user("view", Role::Viewer, "battery staple"),
        ];
        assert_eq!(
            check_login(&users, "ops", "correct horse").map(|user| user.role),
            Some(Role::Operator)
        );
        assert!(check_login(&users, "ops", "battery staple").is_none());
        assert!(check_login(&users, "nobody", "correct horse").is_none());
        assert!(check_login(&users, "", "").is_none());
    }

    #[test]
    fn a_hash_never_holds_the_password_and_debug_never_prints_it() {
        let entry = user("ops", Role::Operator, "correct horse");
        assert!(entry.password_hash.starts_with("$argon2id$"));
        assert!(!entry.password_hash.contains("correct horse"));
        assert!(!format!("{entry:?}").contains("argon2"));
        assert!(entry.validate().is_ok());
    }

    #[test]
    fn tokens_compare_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
    }
}
