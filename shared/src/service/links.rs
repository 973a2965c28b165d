//! The owner's signed links, one entry for all of them: the token says what the link is for
//! (approve or reject actions, the full list, the settings page, a settings-link request),
//! and the page comes from the service that owns it. Above approval, settings and the full
//! list, so none of them needs the others.

use crate::service::approval::{self, ApprovalDeps, Page};
use crate::service::{full_list, settings};
use crate::token::Decision;

/// GET: the page the link leads to. Never changes anything (mail scanners prefetch links).
pub async fn show(deps: &ApprovalDeps<'_>, raw: &str) -> Page {
    let (practice, claims) = match approval::check(deps, raw).await {
        Ok(x) => x,
        Err(p) => return p,
    };
    match claims.decision {
        Decision::Settings => settings::show(&practice),
        Decision::SettingsRequest => settings::link_request_page(&practice),
        Decision::List => full_list::show(deps, &practice).await,
        Decision::Approve | Decision::Reject => {
            approval::show_decision(deps, &practice, &claims).await
        }
    }
}

/// POST: what the link's page does. `body` is the form a settings page posts (ignored for
/// decisions).
pub async fn decide(deps: &ApprovalDeps<'_>, raw: &str, body: &[u8]) -> Page {
    let (practice, claims) = match approval::check(deps, raw).await {
        Ok(x) => x,
        Err(p) => return p,
    };
    match claims.decision {
        Decision::Settings => settings::save(deps, deps.admin, &practice, &claims, body).await,
        Decision::SettingsRequest => settings::request_link(deps, &practice, &claims).await,
        Decision::List => full_list::post(),
        Decision::Approve | Decision::Reject => {
            approval::decide_actions(deps, &practice, &claims).await
        }
    }
}
