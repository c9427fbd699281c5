//! The console's page frame: escaping, the layout with its navigation, and a few table
//! helpers. No script and no external asset: one inline style sheet.

use axum::response::Html;

use crate::auth::Session;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:0;color:#1d2530;background:#f5f7fa}\
header{background:#1d2b3a;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}\
header a{color:#cfe3ff;text-decoration:none}header strong{margin-right:1rem}\
header form{margin-left:auto}main{padding:1rem 1.4rem}\
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem;font-size:.92rem}\
th,td{border:1px solid #d8dee6;padding:.3rem .55rem;text-align:left;vertical-align:top}\
th{background:#eef2f7}.ok{color:#176b2c;font-weight:600}.bad{color:#a4161a;font-weight:600}\
.muted{color:#667}pre{background:#fff;border:1px solid #d8dee6;padding:.6rem;white-space:pre-wrap;word-break:break-all}\
button{padding:.35rem .8rem;cursor:pointer}button.danger{background:#a4161a;color:#fff;border:0}\
form.login{display:flex;flex-direction:column;gap:.6rem;max-width:20rem}\
.num{text-align:right;font-variant-numeric:tabular-nums}";

/// A whole page: the frame, navigation for a logged-in user, and `body`.
pub fn page(title: &str, session: Option<&Session>, body: &str) -> Html<String> {
    let nav = match session {
        Some(session) => format!(
            "<a href=\"/\">概览 Overview</a><a href=\"/queues\">队列 Queues</a>\
             <a href=\"/dead-letters\">死信 Dead letters</a><a href=\"/outlets\">网点 Outlets</a>\
             <a href=\"/stock\">库存 Stock</a><a href=\"/cards\">卡片 Cards</a><a href=\"/audit\">审计 Audit</a>\
             <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"muted\">{} ({})</span> <button type=\"submit\">退出 Log out</button></form>",
            esc(&session.csrf),
            esc(&session.user),
            session.role.name()
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title} · simflow</title>\
         <style>{STYLE}</style></head><body><header><strong>simflow ops</strong>{nav}</header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    ))
}

/// A table with a header row and rows of cells that are already HTML.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = String::from("<table><tr>");
    for header in headers {
        html.push_str(&format!("<th>{}</th>", esc(header)));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            html.push_str(&format!("<td>{cell}</td>"));
        }
        html.push_str("</tr>");
    }
    if rows.is_empty() {
        html.push_str(&format!(
            "<tr><td colspan=\"{}\" class=\"muted\">无 / none</td></tr>",
            headers.len()
        ));
    }
    html.push_str("</table>");
    html
}

/// A number, right-aligned.
pub fn num(value: impl std::fmt::Display) -> String {
    format!("<span class=\"num\">{value}</span>")
}

/// Ready or not, in words and colour.
pub fn ready(healthy: bool) -> String {
    if healthy {
        "<span class=\"ok\">就绪 ready</span>".to_owned()
    } else {
        "<span class=\"bad\">未就绪 not ready</span>".to_owned()
    }
}

/// An error box for a source that could not be read.
pub fn unavailable(what: &str, error: &anyhow::Error) -> String {
    format!(
        "<p class=\"bad\">{} 不可用 / unavailable: {}</p>",
        esc(what),
        esc(&format!("{error:#}"))
    )
}
