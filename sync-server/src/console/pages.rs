//! The console's pages (askama templates in `sync-server/templates/console`) and their words in
//! Chinese and English.
use askama::Template;

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The `lang` attribute of the page.
    pub fn html(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// The words of the pages in one language.
pub struct Words {
    pub login_title: &'static str,
    pub user: &'static str,
    pub password: &'static str,
    pub login: &'static str,
    pub logout: &'static str,
    pub wrong_login: &'static str,
    pub forbidden: &'static str,
    pub csrf_failed: &'static str,
    pub console_is_for_supervisors: &'static str,
    pub too_many_attempts: &'static str,
    wait: (&'static str, &'static str),
    pub unavailable: &'static str,
    pub try_again: &'static str,
    pub bad_request: &'static str,
    pub back_to_login: &'static str,
    pub reviews: &'static str,
    pub nothing_to_review: &'static str,
    waiting: (&'static str, &'static str),
    pub worker: &'static str,
    pub area: &'static str,
    pub finished: &'static str,
    pub visited: &'static str,
    pub notes: &'static str,
    pub comment: &'static str,
    pub approve: &'static str,
    pub return_visit: &'static str,
    pub approved_notice: &'static str,
    pub returned_notice: &'static str,
    refusals: [(&'static str, &'static str); 6],
}

const EN: Words = Words {
    login_title: "Sign in to the Gridwork console",
    user: "User",
    password: "Password",
    login: "Sign in",
    logout: "Sign out",
    wrong_login: "Wrong user or password.",
    forbidden: "Not allowed",
    csrf_failed:
        "This form is out of date or did not come from this console. Reload the page and try again.",
    console_is_for_supervisors:
        "The console is for supervisors and operators; grid workers use the app.",
    too_many_attempts: "Too many failed sign-ins",
    wait: ("Wait ", " seconds before trying again."),
    unavailable: "The console is unavailable",
    try_again: "Try again in a moment.",
    bad_request: "Not understood",
    back_to_login: "Back to sign in",
    reviews: "Visits to review",
    nothing_to_review: "Nothing to review: every finished visit in your area has been reviewed.",
    waiting: ("", " finished visits wait for your review, oldest first."),
    worker: "Worker",
    area: "Area",
    finished: "Finished",
    visited: "Visited",
    notes: "Notes",
    comment: "Comment (required to return)",
    approve: "Approve",
    return_visit: "Return",
    approved_notice: "Visit approved. The worker sees it at their next sync.",
    returned_notice: "Visit returned with your comment. The worker sees it at their next sync.",
    refusals: [
        (
            "invalid_value",
            "A visit is returned with a comment: write what is missing.",
        ),
        (
            "forbidden_role",
            "You may not review this visit (nobody reviews their own).",
        ),
        ("out_of_scope", "This visit is outside your area."),
        (
            "invalid_transition",
            "This visit cannot be reviewed now (not finished, or reviewed already).",
        ),
        (
            "refused_by_relay",
            "The relay refused the review; nothing was changed.",
        ),
        ("deleted", "This visit was deleted."),
    ],
};

const ZH: Words = Words {
    login_title: "登录网格工作台",
    user: "用户",
    password: "密码",
    login: "登录",
    logout: "退出",
    wrong_login: "用户名或密码错误。",
    forbidden: "不允许",
    csrf_failed: "此表单已过期或并非来自本工作台。请刷新页面后重试。",
    console_is_for_supervisors: "工作台供督导员和管理员使用；网格员请使用手机应用。",
    too_many_attempts: "登录失败次数过多",
    wait: ("请等待 ", " 秒后再试。"),
    unavailable: "工作台暂时不可用",
    try_again: "请稍后再试。",
    bad_request: "无法理解的请求",
    back_to_login: "返回登录",
    reviews: "待审核走访",
    nothing_to_review: "没有待审核的走访：您辖区内已完成的走访都已审核。",
    waiting: ("有 ", " 条已完成的走访等待您审核（最早的在前）。"),
    worker: "网格员",
    area: "区域",
    finished: "完成时间",
    visited: "走访对象",
    notes: "备注",
    comment: "意见（退回时必填）",
    approve: "通过",
    return_visit: "退回",
    approved_notice: "走访已通过。网格员下次同步时可见。",
    returned_notice: "走访已退回并附上您的意见。网格员下次同步时可见。",
    refusals: [
        ("invalid_value", "退回走访需要填写意见：请说明缺少什么。"),
        ("forbidden_role", "您不能审核此走访（不能审核自己的走访）。"),
        ("out_of_scope", "此走访不在您的辖区内。"),
        (
            "invalid_transition",
            "此走访现在不能审核（尚未完成或已审核）。",
        ),
        ("refused_by_relay", "中继服务器拒绝了此审核；没有任何更改。"),
        ("deleted", "此走访已删除。"),
    ],
};

impl Words {
    pub fn of(lang: Lang) -> &'static Words {
        match lang {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }

    pub fn wait_seconds(&self, secs: u64) -> String {
        format!("{}{secs}{}", self.wait.0, self.wait.1)
    }

    pub fn waiting(&self, n: usize) -> String {
        format!("{}{n}{}", self.waiting.0, self.waiting.1)
    }

    /// What a refusal code means, in words.
    pub fn refusal(&self, code: &str) -> &'static str {
        self.refusals
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, text)| *text)
            .unwrap_or(self.try_again)
    }
}

/// A rendered page.
pub struct Page<'a> {
    html: String,
    _lang: std::marker::PhantomData<&'a ()>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    csrf: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessageTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    csrf: &'a str,
    text: &'a str,
}

#[derive(Template)]
#[template(path = "console/reviews.html")]
struct ReviewsTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    csrf: &'a str,
    rows: &'a [ReviewRow],
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

fn rendered(t: impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a console template failed to render");
        "<!DOCTYPE html><title>Gridwork</title><p>The page could not be drawn.</p>".into()
    })
}

impl<'a> Page<'a> {
    fn of(html: String) -> Page<'a> {
        Page {
            html,
            _lang: std::marker::PhantomData,
        }
    }

    pub fn render(self) -> String {
        self.html
    }

    pub fn login(lang: Lang, csrf: &str, error: Option<&str>) -> Page<'a> {
        let w = Words::of(lang);
        Page::of(rendered(LoginTemplate {
            lang,
            title: w.login_title,
            w,
            user: None,
            csrf,
            error,
        }))
    }

    pub fn message(lang: Lang, title: &str, text: &str) -> Page<'a> {
        Page::of(rendered(MessageTemplate {
            lang,
            title,
            w: Words::of(lang),
            user: None,
            csrf: "",
            text,
        }))
    }

    pub fn reviews(
        lang: Lang,
        user: &str,
        csrf: &str,
        rows: &[ReviewRow],
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Page<'a> {
        let w = Words::of(lang);
        Page::of(rendered(ReviewsTemplate {
            lang,
            title: w.reviews,
            w,
            user: Some(user),
            csrf,
            rows,
            notice,
            error,
        }))
    }
}

/// A visit waiting for review, as the queue shows it.
pub struct ReviewRow {
    pub id: String,
    pub purpose: String,
    pub worker: String,
    pub area: String,
    pub ended: String,
    /// The titles of the records visited (names, addresses).
    pub visited: Vec<String>,
    pub checklist: Vec<(String, String)>,
    pub notes: String,
}

/// The review queue of a console device's store.
pub fn review_rows(store: &gridwork_core::Store) -> gridwork_core::Result<Vec<ReviewRow>> {
    let mut out = Vec::new();
    for s in store.review_queue(200)? {
        let visit = store.get(&s.id)?;
        let mut visited = Vec::new();
        for id in &visit.visited {
            match store.get(id) {
                Ok(r) => visited.push(
                    r.field(r.kind.title_field())
                        .unwrap_or(r.kind.as_str())
                        .to_owned(),
                ),
                Err(gridwork_core::Error::UnknownRecord(_)) => visited.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
        let field = |k: &str| visit.field(k).unwrap_or("").to_owned();
        let ended = field("ended_at");
        out.push(ReviewRow {
            id: s.id,
            purpose: field("purpose"),
            worker: field("worker"),
            area: visit.area.clone(),
            ended: if ended.len() >= 16 {
                format!("{} {} UTC", &ended[..10], &ended[11..16])
            } else {
                ended
            },
            visited,
            checklist: visit.checklist.clone().into_iter().collect(),
            notes: visit.notes.clone(),
        });
    }
    Ok(out)
}

/// The console's one stylesheet (served at `/console/console.css`; no inline styles, so the
/// Content-Security-Policy can forbid them).
pub const STYLESHEET: &str = r#"
:root { --ink: #1d2733; --muted: #5b6776; --line: #d8dee6; --accent: #0b6bcb; --ok: #1e7d32; --warn: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; color: var(--ink); background: #f4f6f9; }
header { display: flex; gap: 1rem; align-items: center; padding: .75rem 1.25rem; background: #fff; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
header .brand { font-size: 1.1rem; }
header nav a { color: var(--accent); text-decoration: none; font-weight: 600; }
header .who { margin-left: auto; color: var(--muted); }
header .langs { color: var(--muted); }
header .langs a { color: var(--muted); }
main { max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.25rem; margin-bottom: 1rem; }
.narrow { max-width: 26rem; margin: 3rem auto; }
label { display: block; margin: .5rem 0; color: var(--muted); }
input { display: block; width: 100%; padding: .55rem .65rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; color: var(--ink); }
button { font: inherit; padding: .5rem 1rem; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; margin-top: .5rem; }
button.return { background: #fff; color: var(--warn); border-color: var(--warn); }
button.approve { background: var(--ok); border-color: var(--ok); }
button.link { background: none; border: none; color: var(--accent); padding: 0; margin: 0; }
form.inline { display: inline; }
form.review { display: flex; gap: .75rem; align-items: end; flex-wrap: wrap; }
form.review label { flex: 1 1 16rem; margin: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0 0 1rem; }
dt { color: var(--muted); }
dd { margin: 0; }
.notice { background: #e8f5e9; border: 1px solid #b7dfba; padding: .6rem .9rem; border-radius: 6px; }
.error { background: #fdecea; border: 1px solid #f5c2bd; padding: .6rem .9rem; border-radius: 6px; color: var(--warn); }
.empty { color: var(--muted); }
"#;
