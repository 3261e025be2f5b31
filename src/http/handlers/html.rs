//! What the status page and the Cluster page share: escaping, the page shell (inline CSS, the
//! navigation, the small inline script), the query string and durations as people read them.
//!
//! Everything is inline so the pages work offline and behind any proxy; the script only adds
//! conveniences (open groups kept across reloads, the delete buttons) on top of server-rendered
//! HTML. No user input is ever placed inside the script or an event handler: values reach the
//! script through escaped `data-` attributes only.

use std::fmt::Write;

use crate::http::path::percent_decode;
use crate::http::state::HttpConfig;

/// HTML-escapes text and attribute values (both quote kinds).
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    esc_into(&mut o, s);
    o
}

pub(crate) fn esc_into(o: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
}

/// The query string's parameters, decoded (`+` is a space, as forms send it); a parameter that
/// does not decode is dropped.
pub(crate) fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Percent-encodes a query value.
pub(crate) fn query_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// A duration for people: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub(crate) fn human_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Which page the navigation marks as current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Metrics,
    Cluster,
}

const CSS: &str = "\
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}\
nav{background:#2b3036;padding:.5em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}\
nav a{color:#ddd;text-decoration:none}nav a.cur{color:#fff;font-weight:bold}nav .brand{color:#fff;font-weight:bold;font-size:110%}\
main{padding:.8em 1.2em;max-width:100%}h2{font-size:120%}\
.bar{display:flex;gap:.6em;align-items:center;flex-wrap:wrap;margin:.4em 0 .8em}\
.bar input[type=search]{min-width:30em;max-width:100%;padding:3px 6px}\
.muted{color:#666;font-size:90%}\
details.grp{background:#fff;border:1px solid #ccd;border-radius:4px;margin:0 0 4px}\
details.grp>summary{padding:5px 8px;cursor:pointer;display:flex;gap:4px 6px;align-items:center;flex-wrap:wrap;list-style:none}\
details.grp>summary::before{content:'\\25B8';color:#888}details.grp[open]>summary::before{content:'\\25BE'}\
details.grp.failed{border-color:#d33}\
.lbl{border-radius:3px;padding:1px 5px;font-size:85%;overflow-wrap:anywhere;word-break:break-word;max-width:100%;background:#e4e9ef}\
.lbl.job{background:#f0ad4e;color:#000}.lbl.instance{background:#337ab7;color:#fff}\
.mark{border-radius:3px;padding:1px 5px;font-size:80%;font-weight:bold;white-space:nowrap}\
.mark.fail{background:#d9534f;color:#fff}.mark.agg{background:#5bc0de;color:#000}\
.mark.exp{background:#efe3ff;color:#503080}.mark.stale{background:#fcf8e3;color:#8a6d3b;border:1px solid #e5c07b}\
.push{margin-left:auto;font-size:85%;color:#555;white-space:nowrap}\
button{cursor:pointer}button.del{background:#d9534f;color:#fff;border:0;border-radius:3px;padding:2px 8px;font-size:80%}\
.body{padding:4px 10px 8px;border-top:1px solid #e3e3e8;overflow-x:auto}\
details.fam{border:1px solid #e3e3e8;border-radius:3px;margin:4px 0}\
details.fam>summary{padding:3px 6px;cursor:pointer;overflow-wrap:anywhere}\
.help{background:#777;color:#fff;border-radius:9px;padding:1px 7px;font-size:80%;overflow-wrap:anywhere}\
.type{background:#5cb85c;color:#fff;border-radius:3px;padding:1px 5px;font-size:80%}\
table{border-collapse:collapse;margin:.3em 0;background:#fff}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;font-size:90%;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f2f3f5}table.kv th{white-space:nowrap;min-width:12em}\
.pages{margin:.8em 0;display:flex;gap:1em;align-items:center}\
.tab{display:none}.tab:target{display:block}.tab:target~.metrics-tab{display:none}\
.state-active{color:#2a7a2a;font-weight:bold}.state-joining,.state-leaving{color:#a06000;font-weight:bold}\
";

/// Keeps open groups open across reloads (localStorage, by group URL) and runs the delete
/// buttons after a confirm. Values come only from `data-` attributes.
const SCRIPT: &str = r#"
(function(){
var K='pushgate.open.'+location.pathname;
function load(){try{return JSON.parse(localStorage.getItem(K)||'[]')}catch(e){return []}}
var open=new Set(load());
document.querySelectorAll('details.grp').forEach(function(d){
  if(open.has(d.dataset.id))d.open=true;
  d.addEventListener('toggle',function(){
    if(d.open)open.add(d.dataset.id);else open.delete(d.dataset.id);
    try{localStorage.setItem(K,JSON.stringify(Array.from(open)))}catch(e){}
  });
});
function tab(){
  var st=location.hash==='#status',l=document.getElementById('status-link'),m=document.getElementById('metrics-link');
  if(!l||!document.getElementById('status'))return;
  l.classList.toggle('cur',st);if(m)m.classList.toggle('cur',!st);
  if(st)window.scrollTo(0,0);
}
window.addEventListener('hashchange',tab);tab();
document.addEventListener('click',function(e){
  var b=e.target.closest('button[data-url]');
  if(!b)return;
  e.preventDefault();e.stopPropagation();
  if(!confirm(b.dataset.confirm))return;
  fetch(b.dataset.url,{method:b.dataset.method}).then(function(r){
    if(r.ok){location.reload();return}
    return r.text().then(function(t){alert('Failed ('+r.status+'): '+t)});
  },function(err){alert('Failed: '+err)});
});
})();
"#;

/// The page up to and including the opening `<main>`.
pub(crate) fn page_start(h: &mut String, cfg: &HttpConfig, title: &str, tab: Tab) {
    let p = esc(&cfg.route_prefix);
    let cur = |t: Tab| if t == tab { " class=\"cur\"" } else { "" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{CSS}</style></head><body>\n\
<nav><span class=\"brand\">pushgate</span><a href=\"{p}/\" id=\"metrics-link\"{}>Metrics</a>\
<a href=\"{p}/#status\" id=\"status-link\">Status</a>\
<a href=\"{p}/cluster\"{}>Cluster</a><a href=\"{p}{}\">/metrics</a></nav>\n<main>\n",
        esc(title),
        cur(Tab::Metrics),
        cur(Tab::Cluster),
        esc(&cfg.telemetry_path),
    );
}

/// Closes the page, with the script.
pub(crate) fn page_end(h: &mut String) {
    h.push_str("</main>\n<script>");
    h.push_str(SCRIPT);
    h.push_str("</script>\n</body></html>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn query_parameters_decode_like_a_form() {
        let p = query_params(Some("q=job%3Da+b&page=2&&bad=%zz&flag"));
        assert_eq!(
            p,
            vec![
                ("q".to_owned(), "job=a b".to_owned()),
                ("page".to_owned(), "2".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(query_value("job=a b/é"), "job%3Da%20b%2F%C3%A9");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(-3.0), "0s");
        assert_eq!(human_age(59.9), "59s");
        assert_eq!(human_age(200.0), "3m 20s");
        assert_eq!(human_age(7500.0), "2h 5m");
        assert_eq!(human_age(3.0 * 86400.0 + 4.0 * 3600.0), "3d 4h");
    }
}
