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
    pub events: &'static str,
    pub open_events: &'static str,
    pub closed_events: &'static str,
    pub all_events: &'static str,
    pub no_events: &'static str,
    pub title: &'static str,
    pub status: &'static str,
    pub category: &'static str,
    pub priority: &'static str,
    pub responsible: &'static str,
    pub assignee: &'static str,
    pub due: &'static str,
    pub overdue: &'static str,
    pub escalated_to_me: &'static str,
    pub timeline: &'static str,
    pub act: &'static str,
    pub comment_optional: &'static str,
    pub assign_to: &'static str,
    pub hand_down_to: &'static str,
    pub done_notice: &'static str,
    pub not_found: &'static str,
    pub not_in_your_area: &'static str,
    pub admin: &'static str,
    pub areas: &'static str,
    pub path: &'static str,
    pub level: &'static str,
    pub name: &'static str,
    pub id: &'static str,
    pub parent: &'static str,
    pub add_area: &'static str,
    pub users: &'static str,
    pub role: &'static str,
    pub devices: &'static str,
    pub disabled: &'static str,
    pub add_user: &'static str,
    pub revoke: &'static str,
    pub device_id_optional: &'static str,
    pub issue_device: &'static str,
    pub schedules_and_forms: &'static str,
    pub form: &'static str,
    pub new_device: &'static str,
    pub token_once: &'static str,
    pub relay_address: &'static str,
    pub device: &'static str,
    pub token: &'static str,
    pub qr_holds: &'static str,
    pub operators_only: &'static str,
    pub export_this: &'static str,
    pub set_user: &'static str,
    pub remove: &'static str,
    pub tag_optional: &'static str,
    pub every: &'static str,
    pub save_schedule: &'static str,
    pub form_json: &'static str,
    pub save_form: &'static str,
    pub map: &'static str,
    pub nothing_to_draw: &'static str,
    pub places: &'static str,
    pub visits: &'static str,
    pub boundaries: &'static str,
    pub geojson: &'static str,
    pub save_boundary: &'static str,
    pub last_sync: &'static str,
    pub saved_notice: &'static str,
    pub revoked_notice: &'static str,
    pub stats: &'static str,
    pub from: &'static str,
    pub until: &'static str,
    pub show: &'static str,
    pub coverage: &'static str,
    pub no_schedules: &'static str,
    pub visits_per_worker: &'static str,
    pub events_by_category: &'static str,
    pub reported: &'static str,
    pub median_close: &'static str,
    pub escalations: &'static str,
    pub records: &'static str,
    pub followups_due: &'static str,
    pub nothing_due: &'static str,
    pub state: &'static str,
    pub last_visit: &'static str,
    pub schedule: &'static str,
    pub duplicates: &'static str,
    pub no_duplicates: &'static str,
    pub keep_left: &'static str,
    pub keep_right: &'static str,
    pub not_duplicate: &'static str,
    pub merged_notice: &'static str,
    pub distinct_notice: &'static str,
    pub exports: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub area_optional: &'static str,
    pub unmasked: &'static str,
    pub download: &'static str,
    pub conflicts: &'static str,
    pub resolved_notice: &'static str,
    pub tags: &'static str,
    pub links: &'static str,
    pub history: &'static str,
    pub when: &'static str,
    pub who: &'static str,
    pub what: &'static str,
    pub changes: &'static str,
    pub deleted_record: &'static str,
    pub merged_into: &'static str,
    actions: [(&'static str, &'static str); 10],
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
            "Something is missing: returning needs a comment, assigning a user.",
        ),
        (
            "forbidden_role",
            "Your role does not allow this (nobody reviews their own visit).",
        ),
        ("out_of_scope", "This is outside your area."),
        ("invalid_transition", "Not possible in its present state."),
        (
            "refused_by_relay",
            "The relay refused it; nothing was changed.",
        ),
        ("deleted", "This was deleted."),
    ],
    events: "Events",
    open_events: "Open",
    closed_events: "Closed",
    all_events: "All",
    no_events: "No events here.",
    title: "Title",
    status: "Status",
    category: "Category",
    priority: "Priority",
    responsible: "Handled by",
    assignee: "Assignee",
    due: "Due",
    overdue: "overdue",
    escalated_to_me: "escalated to you",
    timeline: "Timeline",
    act: "Act on it",
    comment_optional: "Comment (required to return)",
    assign_to: "Assign to (user id)",
    hand_down_to: "Hand down to",
    done_notice: "Done. Devices see it at their next sync.",
    not_found: "Not found",
    not_in_your_area: "There is no such record in your area.",
    admin: "Operator",
    areas: "Areas",
    path: "Path",
    level: "Level",
    name: "Name",
    id: "Id",
    parent: "Parent",
    add_area: "Add area",
    users: "Users",
    role: "Role",
    devices: "Devices",
    disabled: "disabled",
    add_user: "Add user",
    revoke: "Revoke",
    device_id_optional: "Device id (optional)",
    issue_device: "Issue a device token",
    schedules_and_forms: "Follow-up schedules and city forms",
    form: "Form",
    new_device: "A new device",
    token_once: "This token is shown once. Scan the code with the Gridwork app, or type the relay's address and the token.",
    relay_address: "Relay",
    device: "Device",
    token: "Token",
    qr_holds: "The code holds:",
    operators_only: "This page is for operators.",
    export_this: "Export what is shown",
    set_user: "Change role and area",
    remove: "remove",
    tag_optional: "Tag (optional)",
    every: "Every (weekly, monthly, 10d, 2w, 3m)",
    save_schedule: "Save the schedule",
    form_json: "A city form as JSON (see docs/protocol.md, GET /v1/forms)",
    save_form: "Save the form",
    map: "Map",
    nothing_to_draw: "Nothing to draw yet: an operator uploads the areas' boundaries, and places and visits with coordinates appear.",
    places: "Places",
    visits: "Visits",
    boundaries: "Area boundaries (GeoJSON)",
    geojson: "GeoJSON (Polygon, MultiPolygon, Feature or FeatureCollection)",
    save_boundary: "Save the boundary",
    last_sync: "Last sync",
    saved_notice: "Saved.",
    revoked_notice: "Device revoked: it wipes its store at its next contact.",
    stats: "Follow-ups and statistics",
    from: "From",
    until: "Until",
    show: "Show",
    coverage: "Follow-up coverage",
    no_schedules: "No follow-up schedules.",
    visits_per_worker: "Finished visits per worker",
    events_by_category: "Events by category",
    reported: "Reported",
    median_close: "Median time to close",
    escalations: "Escalations",
    records: "Records",
    followups_due: "Follow-ups due (overdue, today, this week)",
    nothing_due: "Nothing due.",
    state: "State",
    last_visit: "Last visit",
    schedule: "Schedule",
    duplicates: "Duplicates",
    no_duplicates: "No possible duplicates in your area.",
    keep_left: "Keep the left one",
    keep_right: "Keep the right one",
    not_duplicate: "Not a duplicate",
    merged_notice: "Merged. Differing values wait on the kept record as conflicts.",
    distinct_notice: "Recorded: they are not duplicates.",
    exports: "Exports",
    kind: "Kind",
    format: "Format",
    area_optional: "Area (optional)",
    unmasked: "ID numbers in full",
    download: "Download",
    conflicts: "Conflicts to resolve",
    resolved_notice: "Resolved. Devices see it at their next sync.",
    tags: "Tags",
    links: "Links",
    history: "History",
    when: "When",
    who: "Who",
    what: "What",
    changes: "Old → new",
    deleted_record: "deleted",
    merged_into: "merged into",
    actions: [
        ("assign", "Assign"),
        ("start", "Start"),
        ("resolve", "Resolve"),
        ("verify", "Verify"),
        ("close", "Close"),
        ("return", "Return"),
        ("reopen", "Reopen"),
        ("escalate", "Escalate"),
        ("hand_down", "Hand down"),
        ("comment", "Comment"),
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
        (
            "invalid_value",
            "缺少内容：退回需要填写意见，指派需要填写用户。",
        ),
        (
            "forbidden_role",
            "您的角色不允许此操作（不能审核自己的走访）。",
        ),
        ("out_of_scope", "这不在您的辖区内。"),
        ("invalid_transition", "当前状态下不能这样做。"),
        ("refused_by_relay", "中继服务器拒绝了此操作；没有任何更改。"),
        ("deleted", "已删除。"),
    ],
    events: "事件",
    open_events: "未结",
    closed_events: "已结",
    all_events: "全部",
    no_events: "这里没有事件。",
    title: "标题",
    status: "状态",
    category: "类别",
    priority: "优先级",
    responsible: "负责区域",
    assignee: "处理人",
    due: "期限",
    overdue: "已超期",
    escalated_to_me: "已上报给您",
    timeline: "处理记录",
    act: "处理",
    comment_optional: "意见（退回时必填）",
    assign_to: "指派给（用户编号）",
    hand_down_to: "下派到",
    done_notice: "已完成。各设备下次同步时可见。",
    not_found: "未找到",
    not_in_your_area: "您的辖区内没有这条记录。",
    admin: "系统管理",
    areas: "区域",
    path: "路径",
    level: "层级",
    name: "名称",
    id: "编号",
    parent: "上级",
    add_area: "添加区域",
    users: "用户",
    role: "角色",
    devices: "设备",
    disabled: "已停用",
    add_user: "添加用户",
    revoke: "吊销",
    device_id_optional: "设备编号（可选）",
    issue_device: "签发设备令牌",
    schedules_and_forms: "随访计划与城市表单",
    form: "表单",
    new_device: "新设备",
    token_once: "此令牌只显示一次。请用网格通应用扫描二维码，或输入中继地址和令牌。",
    relay_address: "中继",
    device: "设备",
    token: "令牌",
    qr_holds: "二维码内容：",
    operators_only: "此页面仅供系统管理员使用。",
    export_this: "导出当前内容",
    set_user: "修改角色和区域",
    remove: "删除",
    tag_optional: "标签（可选）",
    every: "周期（weekly、monthly、10d、2w、3m）",
    save_schedule: "保存随访计划",
    form_json: "城市表单 JSON（见 docs/protocol.md 的 GET /v1/forms）",
    save_form: "保存表单",
    map: "地图",
    nothing_to_draw: "暂无可显示内容：管理员上传区域边界后，带坐标的地点和走访会显示在这里。",
    places: "地点",
    visits: "走访",
    boundaries: "区域边界（GeoJSON）",
    geojson: "GeoJSON（Polygon、MultiPolygon、Feature 或 FeatureCollection）",
    save_boundary: "保存边界",
    last_sync: "上次同步",
    saved_notice: "已保存。",
    revoked_notice: "设备已吊销：它下次联系时会清除本地数据。",
    stats: "随访与统计",
    from: "开始",
    until: "结束",
    show: "查看",
    coverage: "随访完成率",
    no_schedules: "没有随访计划。",
    visits_per_worker: "各网格员完成的走访",
    events_by_category: "按类别的事件",
    reported: "上报",
    median_close: "办结时间中位数",
    escalations: "上报次数",
    records: "记录",
    followups_due: "待随访（超期、今天、本周）",
    nothing_due: "没有待随访。",
    state: "状态",
    last_visit: "上次走访",
    schedule: "计划",
    duplicates: "疑似重复",
    no_duplicates: "您的辖区内没有疑似重复的记录。",
    keep_left: "保留左边",
    keep_right: "保留右边",
    not_duplicate: "不是重复",
    merged_notice: "已合并。不同的取值作为冲突留在保留的记录上。",
    distinct_notice: "已记录：它们不是重复。",
    exports: "导出",
    kind: "类型",
    format: "格式",
    area_optional: "区域（可选）",
    unmasked: "显示完整证件号",
    download: "下载",
    conflicts: "待解决的冲突",
    resolved_notice: "已解决。各设备下次同步时可见。",
    tags: "标签",
    links: "关联",
    history: "修改历史",
    when: "时间",
    who: "人员",
    what: "操作",
    changes: "原值 → 新值",
    deleted_record: "已删除",
    merged_into: "已合并到",
    actions: [
        ("assign", "指派"),
        ("start", "开始处理"),
        ("resolve", "办结"),
        ("verify", "核查"),
        ("close", "关闭"),
        ("return", "退回"),
        ("reopen", "重新打开"),
        ("escalate", "上报"),
        ("hand_down", "下派"),
        ("comment", "备注"),
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

    /// The label of an event action.
    pub fn action(&self, name: &str) -> &'static str {
        self.actions
            .iter()
            .find(|(a, _)| *a == name)
            .map(|(_, l)| *l)
            .unwrap_or("?")
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
pub struct Page(String);

/// Who a page is drawn for: the signed-in user's language, name, whether they are an operator (the
/// operator's link) and the session's CSRF token (every form carries it).
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub lang: Lang,
    pub name: &'a str,
    pub operator: bool,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
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
    operator: bool,
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
    operator: bool,
    csrf: &'a str,
    rows: &'a [ReviewRow],
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    state: &'a str,
    area: &'a str,
    areas: &'a [(String, String)],
    rows: &'a [EventRow],
}

#[derive(Template)]
#[template(path = "console/event.html")]
struct EventTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    e: &'a EventRow,
    timeline: &'a [TimelineRow],
    actions: Vec<(&'static str, &'static str)>,
    hand_down: &'a [(String, String)],
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct RecordTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    r: &'a RecordView,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/duplicates.html")]
struct DuplicatesTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    pairs: &'a [PairRow],
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/exports.html")]
struct ExportsTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    kinds: &'a [&'a str],
}

#[derive(Template)]
#[template(path = "console/stats.html")]
struct StatsTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    v: &'a StatsView,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    v: &'a AdminView,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "console/token.html")]
struct TokenTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    relay: &'a str,
    device: &'a str,
    token: &'a str,
    qr: &'a str,
    qr_text: &'a str,
}

#[derive(Template)]
#[template(path = "console/map.html")]
struct MapTemplate<'a> {
    lang: Lang,
    title: &'a str,
    w: &'a Words,
    user: Option<&'a str>,
    operator: bool,
    csrf: &'a str,
    v: &'a super::map::MapView,
    categories: &'a [&'a str],
}

fn rendered(t: impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a console template failed to render");
        "<!DOCTYPE html><title>Gridwork</title><p>The page could not be drawn.</p>".into()
    })
}

impl Page {
    fn of(html: String) -> Page {
        Page(html)
    }

    pub fn render(self) -> String {
        self.0
    }

    pub fn login(lang: Lang, csrf: &str, error: Option<&str>) -> Page {
        let w = Words::of(lang);
        Page::of(rendered(LoginTemplate {
            lang,
            title: w.login_title,
            w,
            user: None,
            operator: false,
            csrf,
            error,
        }))
    }

    pub fn message(lang: Lang, title: &str, text: &str) -> Page {
        Page::of(rendered(MessageTemplate {
            lang,
            title,
            w: Words::of(lang),
            user: None,
            operator: false,
            csrf: "",
            text,
        }))
    }

    pub fn reviews(
        who: &Who<'_>,
        rows: &[ReviewRow],
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(ReviewsTemplate {
            lang,
            title: w.reviews,
            w,
            user: Some(user),
            operator,
            csrf,
            rows,
            notice,
            error,
        }))
    }
}

impl Page {
    #[allow(clippy::too_many_arguments)]
    pub fn events(
        who: &Who<'_>,
        state: &str,
        area: &str,
        areas: &[(String, String)],
        rows: &[EventRow],
    ) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(EventsTemplate {
            lang,
            title: w.events,
            w,
            user: Some(user),
            operator,
            csrf,
            state,
            area,
            areas,
            rows,
        }))
    }

    pub fn event(
        who: &Who<'_>,
        view: &EventView,
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(EventTemplate {
            lang,
            title: &view.row.title,
            w,
            user: Some(user),
            operator,
            csrf,
            e: &view.row,
            timeline: &view.timeline,
            actions: view.actions.iter().map(|a| (*a, w.action(a))).collect(),
            hand_down: &view.hand_down,
            notice,
            error,
        }))
    }
}

/// Areas to choose from: (id, "name (id)").
pub type AreaChoices = Vec<(String, String)>;

/// An event as the board lists it.
pub struct EventRow {
    pub id: String,
    pub title: String,
    pub status: String,
    pub category: String,
    pub priority: String,
    pub area: String,
    pub responsible: String,
    pub assignee: String,
    pub due: String,
    pub overdue: bool,
    pub escalated_to_me: bool,
    open: bool,
    reported_at: String,
}

/// One entry of an event's timeline.
pub struct TimelineRow {
    pub at: String,
    pub by: String,
    pub action: String,
    pub to: String,
    pub comment: String,
}

/// An event's page: the event, its timeline, the actions its status allows and the areas it may be
/// handed down to.
pub struct EventView {
    pub row: EventRow,
    pub timeline: Vec<TimelineRow>,
    pub actions: Vec<&'static str>,
    pub hand_down: Vec<(String, String)>,
}

fn short(iso: &str) -> String {
    if iso.len() >= 16 {
        format!("{} {}", &iso[..10], &iso[11..16])
    } else {
        iso.to_owned()
    }
}

fn event_row(r: &gridwork_core::Record, my_area: &str, now: &str) -> EventRow {
    let field = |k: &str| r.field(k).unwrap_or("").to_owned();
    let status = field("status");
    let open = gridwork_core::EventStatus::parse(&status).is_some_and(|s| s.is_open());
    let responsible = r.responsible.clone().unwrap_or_else(|| r.area.clone());
    let due = field("due");
    EventRow {
        id: r.id.clone(),
        title: field("title"),
        overdue: open && !due.is_empty() && due.as_str() < now,
        escalated_to_me: open && responsible == my_area && responsible != r.area,
        status,
        category: field("category"),
        priority: field("priority"),
        area: r.area.clone(),
        responsible,
        assignee: field("assignee"),
        due: short(&due),
        open,
        reported_at: field("reported_at"),
    }
}

/// The events board of a console device's store: `state` open, closed or all; open ones first, the
/// overdue and those escalated to `my_area` at the top, then the newest.
pub fn event_rows(
    store: &gridwork_core::Store,
    state: &str,
    my_area: &str,
    area: &str,
) -> gridwork_core::Result<(Vec<EventRow>, AreaChoices)> {
    let areas = store.areas()?;
    let within = areas.iter().find(|a| a.id == area).map(|a| a.path.clone());
    let path_of = |id: &str| areas.iter().find(|a| a.id == id).map(|a| a.path.as_str());
    let mut q = gridwork_core::ListQuery::new(gridwork_core::Kind::Event);
    q.limit = 1000;
    let now = gridwork_core::time::now_iso();
    let mut rows = Vec::new();
    for s in store.list(&q)?.items {
        let r = store.get(&s.id)?;
        let row = event_row(&r, my_area, &now);
        let in_area = within.as_deref().is_none_or(|w| {
            [row.area.as_str(), row.responsible.as_str()]
                .into_iter()
                .filter_map(path_of)
                .any(|p| p.starts_with(w))
        });
        let keep = in_area
            && match state {
                "open" => row.open,
                "closed" => !row.open,
                _ => true,
            };
        if keep {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| {
        let key = |e: &EventRow| (!e.open, !e.overdue, !e.escalated_to_me);
        key(a)
            .cmp(&key(b))
            .then_with(|| b.reported_at.cmp(&a.reported_at))
    });
    let choices = areas
        .iter()
        .map(|a| (a.id.clone(), format!("{} ({})", a.name, a.id)))
        .collect();
    Ok((rows, choices))
}

/// An event's page.
pub fn event_view(
    store: &gridwork_core::Store,
    id: &str,
    my_area: &str,
) -> gridwork_core::Result<EventView> {
    use gridwork_core::{EventAction, EventStatus, Kind};
    let r = store.get(id)?;
    if r.kind != Kind::Event {
        return Err(gridwork_core::Error::UnknownRecord(id.to_owned()));
    }
    let row = event_row(&r, my_area, &gridwork_core::time::now_iso());
    let status = EventStatus::parse(&row.status);
    let all = [
        EventAction::Assign {
            assignee: String::new(),
        },
        EventAction::Start,
        EventAction::Resolve,
        EventAction::Verify,
        EventAction::Close,
        EventAction::Return,
        EventAction::Reopen,
        EventAction::Escalate,
        EventAction::HandDown {
            area: String::new(),
        },
        EventAction::Comment,
    ];
    let actions = all
        .iter()
        .filter(|a| status.is_some_and(|s| a.next_status(s).is_some()))
        .map(|a| a.name())
        .collect();
    // Areas strictly below the responsible one that hold the event's home.
    let areas = store.areas()?;
    let path = |id: &str| areas.iter().find(|a| a.id == id).map(|a| a.path.clone());
    let from = path(&row.responsible).unwrap_or_default();
    let home = path(&r.area).unwrap_or_default();
    let hand_down = areas
        .iter()
        .filter(|a| {
            !from.is_empty()
                && a.path.starts_with(&from)
                && a.path != from
                && home.starts_with(&a.path)
        })
        .map(|a| (a.id.clone(), format!("{} ({})", a.name, a.id)))
        .collect();
    let timeline = r
        .timeline
        .iter()
        .map(|t| TimelineRow {
            at: short(&t.at),
            by: t.by.clone(),
            action: t.action.clone(),
            to: t.to.clone().unwrap_or_default(),
            comment: t.comment.clone().unwrap_or_default(),
        })
        .collect();
    Ok(EventView {
        row,
        timeline,
        actions,
        hand_down,
    })
}

impl Page {
    pub fn record(
        who: &Who<'_>,
        r: &RecordView,
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        Page::of(rendered(RecordTemplate {
            lang,
            title: &r.title,
            w: Words::of(lang),
            user: Some(user),
            operator,
            csrf,
            r,
            notice,
            error,
        }))
    }

    pub fn duplicates(
        who: &Who<'_>,
        pairs: &[PairRow],
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(DuplicatesTemplate {
            lang,
            title: w.duplicates,
            w,
            user: Some(user),
            operator,
            csrf,
            pairs,
            notice,
            error,
        }))
    }

    pub fn exports(who: &Who<'_>) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(ExportsTemplate {
            lang,
            title: w.exports,
            w,
            user: Some(user),
            operator,
            csrf,
            kinds: &[
                "person",
                "place",
                "object",
                "organisation",
                "event",
                "visit",
            ],
        }))
    }
}

/// A record's page: its values (ID numbers masked), links, history and open conflicts.
pub struct RecordView {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub area: String,
    pub deleted: bool,
    pub merged_into: Option<String>,
    pub fields: Vec<(String, String)>,
    pub tags: String,
    pub notes: String,
    /// (link type, other record, its title).
    pub links: Vec<(String, String, String)>,
    pub history: Vec<HistoryRow>,
    pub conflicts: Vec<ConflictRow>,
}

pub struct HistoryRow {
    pub at: String,
    pub by: String,
    pub action: String,
    /// (field, old, new), ID numbers masked.
    pub changes: Vec<(String, String, String)>,
}

pub struct ConflictRow {
    pub field: String,
    /// (value, where it comes from).
    pub values: Vec<(String, String)>,
}

fn title_of(store: &gridwork_core::Store, id: &str) -> String {
    match store.get(id) {
        Ok(r) => r
            .field(r.kind.title_field())
            .unwrap_or(r.kind.as_str())
            .to_owned(),
        Err(_) => id.to_owned(),
    }
}

/// A value as the console shows it: ID numbers masked (as lists and exports do).
fn shown(kind: gridwork_core::Kind, field: &str, value: &str) -> String {
    kind.list_value(field, value)
}

pub fn record_view(store: &gridwork_core::Store, id: &str) -> gridwork_core::Result<RecordView> {
    let r = store.get(id)?;
    let kind = r.kind;
    let mut fields: Vec<(String, String)> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), shown(kind, k, v)))
        .collect();
    for v in store.record_form(id)? {
        if let Some(value) = v.value {
            let label = v
                .field
                .as_ref()
                .map(|f| f.label_en.clone())
                .unwrap_or(v.key);
            let masked = if v.field.as_ref().is_some_and(|f| f.sensitive()) {
                gridwork_core::mask(&value)
            } else {
                value
            };
            fields.push((label, masked));
        }
    }
    let mut links = Vec::new();
    for edge in store.links_of(id)? {
        let other = if edge.source == id {
            edge.target
        } else {
            edge.source
        };
        let title = title_of(store, &other);
        links.push((edge.link_type.as_str().to_owned(), other, title));
    }
    let history = store
        .history(id)?
        .into_iter()
        .rev()
        .map(|h| HistoryRow {
            at: short(&gridwork_core::time::iso_from_secs(h.time)),
            by: h.user,
            action: h.action,
            changes: h
                .changes
                .into_iter()
                .map(|c| {
                    let f = |v: Option<String>| {
                        v.map(|v| shown(kind, &c.field, &v))
                            .unwrap_or_else(|| "–".into())
                    };
                    (c.field.clone(), f(c.old), f(c.new))
                })
                .collect(),
        })
        .collect();
    let conflicts = store
        .conflicts()?
        .into_iter()
        .filter(|c| c.record_id == id)
        .map(|c| ConflictRow {
            field: c.field,
            values: c
                .values
                .into_iter()
                .map(|v| {
                    let from = match v.merged_from {
                        Some(m) => format!("(merged {m})"),
                        None if v.user.is_empty() => String::new(),
                        None => format!("({})", v.user),
                    };
                    (v.value, from)
                })
                .collect(),
        })
        .collect();
    Ok(RecordView {
        id: r.id.clone(),
        kind: kind.as_str().to_owned(),
        title: r
            .field(kind.title_field())
            .unwrap_or(kind.as_str())
            .to_owned(),
        area: r.area.clone(),
        deleted: r.deleted,
        merged_into: gridwork_protocol::duplicates::merged_into(&r).map(str::to_owned),
        fields,
        tags: r.tags.join(", "),
        notes: r.notes.clone(),
        links,
        history,
        conflicts,
    })
}

/// A pair of possible duplicates, side by side.
pub struct PairRow {
    pub kind: String,
    pub a: String,
    pub b: String,
    pub a_title: String,
    pub b_title: String,
    pub a_fields: Vec<(String, String)>,
    pub b_fields: Vec<(String, String)>,
    pub reasons: String,
}

pub fn pair_rows(store: &gridwork_core::Store) -> gridwork_core::Result<Vec<PairRow>> {
    Ok(store
        .duplicates(None)?
        .into_iter()
        .map(|p| PairRow {
            kind: p.kind.as_str().to_owned(),
            reasons: p
                .reasons
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            a_title: p.a.title.clone(),
            b_title: p.b.title.clone(),
            a_fields: p.a.fields.into_iter().collect(),
            b_fields: p.b.fields.into_iter().collect(),
            a: p.a.id,
            b: p.b.id,
        })
        .collect())
}

impl Page {
    pub fn stats(who: &Who<'_>, v: &StatsView) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(StatsTemplate {
            lang,
            title: w.stats,
            w,
            user: Some(user),
            operator,
            csrf,
            v,
        }))
    }
}

/// One bar of a chart: its label, its length (of 200) and its value as shown.
pub struct Bar {
    pub label: String,
    pub width: u32,
    pub value: String,
}

/// A follow-up due, as the page lists it.
pub struct DueRow {
    pub id: String,
    pub state: String,
    pub state_class: &'static str,
    pub title: String,
    pub area: String,
    pub workers: String,
    pub last_visit: String,
    pub schedule: String,
}

/// The statistics page: the query as entered, and what it counts.
pub struct StatsView {
    pub area: String,
    pub from: String,
    pub until: String,
    pub coverage: Vec<Bar>,
    pub visits: Vec<Bar>,
    /// (category, reported, open, overdue, closed).
    pub events: Vec<(String, u64, u64, u64, u64)>,
    pub median_close: String,
    pub escalations: String,
    pub records: Vec<(String, u64)>,
    pub duplicates_open: u64,
    pub due: Vec<DueRow>,
}

/// Seconds at the start of a day `YYYY-MM-DD` (UTC).
pub fn day_secs(date: &str) -> Option<i64> {
    gridwork_core::time::parse_iso(&format!("{date}T00:00:00Z"))
}

pub fn stats_view(
    store: &gridwork_core::Store,
    area: &str,
    from: &str,
    until: &str,
) -> gridwork_core::Result<StatsView> {
    let area_q = Some(area.to_owned()).filter(|a| !a.is_empty());
    let query = gridwork_core::stats::StatsQuery {
        area: area_q.clone(),
        from: day_secs(from),
        // `until` names the last day shown: the period ends at the start of the next.
        until: day_secs(until).map(|s| s + 86_400),
        at: None,
    };
    let s = store.statistics(&query)?;
    let coverage = s
        .coverage
        .iter()
        .map(|c| Bar {
            label: c.name.clone(),
            width: (c.share * 200.0).round().clamp(0.0, 200.0) as u32,
            value: format!("{}/{} ({:.0}%)", c.up_to_date, c.records, c.share * 100.0),
        })
        .collect();
    let max = s
        .visits_per_worker
        .values()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let visits = s
        .visits_per_worker
        .iter()
        .map(|(who, n)| Bar {
            label: who.clone(),
            width: (*n * 200 / max) as u32,
            value: n.to_string(),
        })
        .collect();
    let events = s
        .events_by_category
        .iter()
        .map(|(k, e)| (k.clone(), e.reported, e.open, e.overdue, e.closed))
        .collect();
    let median_close = match s.median_close_secs {
        Some(secs) if secs >= 86_400 => format!("{:.1} d", secs as f64 / 86_400.0),
        Some(secs) => format!("{:.1} h", secs as f64 / 3_600.0),
        None => "–".into(),
    };
    let escalations = if s.escalations_per_level.is_empty() {
        "0".to_owned()
    } else {
        s.escalations_per_level
            .iter()
            .map(|(level, n)| format!("{level} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let due = store
        .followups(&gridwork_core::FollowupQuery {
            area: area_q,
            states: vec![
                gridwork_core::DueState::Overdue,
                gridwork_core::DueState::Today,
                gridwork_core::DueState::ThisWeek,
            ],
            utc_offset_minutes: 480,
            ..Default::default()
        })?
        .into_iter()
        .map(|f| DueRow {
            state_class: match f.state {
                gridwork_core::DueState::Overdue => "overdue",
                _ => "",
            },
            state: f.state.as_str().replace('_', " "),
            id: f.record_id,
            title: f.title,
            area: f.area,
            workers: f.workers.join(", "),
            last_visit: f
                .last_visit
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "–".into()),
            schedule: f.schedule_name,
        })
        .collect();
    Ok(StatsView {
        area: area.to_owned(),
        from: from.to_owned(),
        until: until.to_owned(),
        coverage,
        visits,
        events,
        median_close,
        escalations,
        records: s.records_per_kind.into_iter().collect(),
        duplicates_open: s.duplicates_open,
        due,
    })
}

impl Page {
    pub fn admin(who: &Who<'_>, v: &AdminView, notice: Option<&str>, error: Option<&str>) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(AdminTemplate {
            lang,
            title: w.admin,
            w,
            user: Some(user),
            operator,
            csrf,
            v,
            notice,
            error,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn token(who: &Who<'_>, new: &TokenView) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(TokenTemplate {
            lang,
            title: w.new_device,
            w,
            user: Some(user),
            operator,
            csrf,
            relay: &new.relay,
            device: &new.device,
            token: &new.token,
            qr: &new.qr_svg,
            qr_text: &new.qr_text,
        }))
    }
}

/// The operator's page.
pub struct AdminView {
    pub areas: Vec<AreaLine>,
    pub users: Vec<UserLine>,
    pub devices: Vec<DeviceLine>,
    /// (id, what it is).
    pub schedules: Vec<(String, String)>,
    pub forms: Vec<(String, String)>,
}

pub struct AreaLine {
    pub id: String,
    pub path: String,
    pub level: String,
    pub name: String,
}

pub struct UserLine {
    pub id: String,
    pub name: String,
    pub role: String,
    pub area: String,
    pub disabled: bool,
    pub devices: u64,
}

pub struct DeviceLine {
    pub id: String,
    pub user: String,
    pub last_sync: String,
    pub state: String,
    pub active: bool,
}

/// A device just issued: shown once.
pub struct TokenView {
    pub relay: String,
    pub device: String,
    pub token: String,
    pub qr_text: String,
    pub qr_svg: String,
}

/// What an app scans to enrol: the relay's address and the device token.
pub fn enrolment_text(relay: &str, token: &str) -> String {
    format!("gridwork:enrol?relay={relay}&token={token}")
}

/// A QR code of `text` as SVG (black modules on white, no styles or scripts).
pub fn qr_svg(text: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(220, 220)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
        Err(_) => String::new(),
    }
}

pub fn when(secs: Option<i64>) -> String {
    secs.map(|s| short(&gridwork_core::time::iso_from_secs(s)))
        .unwrap_or_else(|| "–".into())
}

impl Page {
    pub fn map(who: &Who<'_>, v: &super::map::MapView) -> Page {
        let Who {
            lang,
            name: user,
            operator,
            csrf,
        } = *who;
        let w = Words::of(lang);
        Page::of(rendered(MapTemplate {
            lang,
            title: w.map,
            w,
            user: Some(user),
            operator,
            csrf,
            v,
            categories: &["incident", "dispute", "hazard_report", "service_request"],
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
                format!("{} UTC", short(&ended))
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
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.25rem; margin-bottom: 1rem; overflow-x: auto; }
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
.muted { color: var(--muted); }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
form.conflict { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
button.choice { background: #fff; color: var(--ink); border-color: var(--line); }
label.check { display: flex; gap: .5rem; align-items: center; }
label.check input { width: auto; display: inline; }
.narrow-left { max-width: 28rem; }
.qr svg { width: 220px; height: 220px; }
textarea { display: block; width: 100%; font: .85rem ui-monospace, monospace; border: 1px solid var(--line); border-radius: 6px; padding: .5rem; }
svg.map { width: 100%; height: auto; background: #fbfcfd; border: 1px solid var(--line); border-radius: 10px; }
svg.map .area { fill: #e7f0fb; stroke: #0b6bcb; stroke-width: 1.5; }
svg.map .area-label { font-size: 13px; fill: #1d2733; text-anchor: middle; }
svg.map .place { fill: #ffffff; stroke: #1d2733; stroke-width: 2; }
svg.map .visit { fill: #1e7d32; }
svg.map .event { fill: #b3261e; }
.legend .key { display: inline-block; width: .8rem; height: .8rem; border-radius: 50%; margin-left: 1rem; vertical-align: middle; }
.legend .key.place { background: #fff; border: 2px solid #1d2733; }
.legend .key.visit { background: #1e7d32; }
.legend .key.event { background: #b3261e; border-radius: 2px; }
code { font-family: ui-monospace, monospace; word-break: break-all; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 0 1rem; }
table.bars th { text-align: left; font-weight: 400; color: var(--muted); padding-right: .75rem; }
table.bars td.num { padding-left: .5rem; font-variant-numeric: tabular-nums; }
form.period { display: flex; gap: .75rem; align-items: end; flex-wrap: wrap; margin-bottom: 1rem; }
form.period label { margin: 0; }
tr.overdue td:first-child { color: var(--warn); font-weight: 600; }
header nav a { margin-right: 1rem; }
.filters a.current { font-weight: 700; color: var(--ink); }
table.board { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
table.board th, table.board td { text-align: left; padding: .5rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
table.board th { color: var(--muted); font-weight: 600; font-size: .9rem; }
tr.overdue td:first-child { border-left: 4px solid var(--warn); }
tr.mine td:first-child { border-left: 4px solid var(--accent); }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: 4px; background: #e7f0fb; color: var(--accent); }
.tag.warn { background: #fdecea; color: var(--warn); }
ol.timeline { margin: 0; padding-left: 1.2rem; }
ol.timeline .when { color: var(--muted); font-variant-numeric: tabular-nums; }
select { display: block; width: 100%; padding: .5rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
form.act .buttons { display: flex; gap: .5rem; flex-wrap: wrap; }
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_qr_code_is_plain_svg_without_styles_or_scripts() {
        let svg = super::qr_svg(&super::enrolment_text("https://relay.example", "gw1_abc"));
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
        assert!(!svg.contains("style=") && !svg.contains("<script"), "{svg}");
    }
}
