# ruff: noqa: E501  (the inline CSS and script read best one rule or statement a line)
"""The page's live parts: refresh without reloading, and the action forms.

The server renders everything; the one inline script (no library) only

* fetches ``?fragment=main`` (the whole page body) with the token, when the
  server sent the page without its data because the request had no token;
* polls ``?fragment=1`` of the same URL every 2 s and swaps the ``#live``
  region when its HTML changed (open ``<details>`` stay open), until the
  fragment says the execution has settled;
* posts the action forms as JSON to ``<api>/executions/<id>/<verb>`` and shows
  the answer, then polls again, a few times even once settled (the history
  projection may trail the answer: compensation shows up a moment later);
* keeps a bearer token, when the server asks for one, in ``sessionStorage``
  (never in the HTML), and sends it with every request it makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

POLL_MS = 2000


@dataclass(frozen=True)
class Actions:
    """How the page may act on executions."""

    api: str | None
    """URL prefix of the action endpoints (``/api``); None: the page is read-only."""
    why_not: str = ""
    """Shown instead of working buttons when ``api`` is None."""
    token: bool = False
    """The endpoints need ``Authorization: Bearer <token>``: the page asks for it."""


READ_ONLY = Actions(
    None,
    "Read-only: this server only reads the runtime file. Run it as "
    "workkit-workflow serve --app MODULE to cancel, pause, send events and restart from this page.",
)

CSS = """
.live{font-size:12px;color:var(--mute);margin-left:8px;font-weight:400}
.live.on::before{content:'';display:inline-block;width:8px;height:8px;border-radius:50%;background:var(--run);
margin-right:5px;animation:pulse 1.2s infinite}
@keyframes pulse{50%{opacity:.3}}
.axis{display:grid;grid-template-columns:210px 1fr 90px;gap:10px;padding:4px 14px 0;font-size:11px;color:var(--mute)}
.ruler{position:relative;height:26px;border-bottom:1px solid #bdc1c6}
.tick{position:absolute;bottom:0;height:6px;border-left:1px solid #9aa0a6}
.tick span{position:absolute;bottom:8px;transform:translateX(-50%);white-space:nowrap;font-variant-numeric:tabular-nums}
.tick.first span{transform:none}.tick.last span{transform:translateX(-100%)}
details.io{margin:3px 0}details.io summary{cursor:pointer;color:#3c4043;font-size:13px;overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}details.io summary code{color:var(--mute)}
details.io pre{max-height:320px;white-space:pre-wrap;word-break:break-word}
.cut{color:var(--wait);font-size:12px}
section.actions{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 14px;margin:12px 0}
section.actions form{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:6px 0}
section.actions input,section.actions select,section.actions textarea,section.actions button{font:inherit;
font-size:13px;padding:4px 6px}
section.actions textarea{flex:1 1 240px;min-height:32px;font-family:ui-monospace,monospace}
section.actions label{font-size:13px;color:#3c4043;min-width:90px}
section.actions fieldset{border:0;padding:0;margin:0}
.why{color:var(--mute);font-size:13px;margin:4px 0}
#answer{font-size:13px;margin:6px 0 0;min-height:1em}#answer.err{color:var(--fail)}
.tokenbox{font-size:13px;margin:8px 0}
.badge.abandoned{background:#9e9e9e}.badge.in_doubt{background:#8d6e63}.step.abandoned .name{color:#757575}
.seg.abandoned{background:repeating-linear-gradient(45deg,#bdbdbd 0 4px,#eee 4px 8px)}.seg.in_doubt{background:#8d6e63}
.statusnote{color:#6d4c41}
@media (max-width:640px){
main{padding:12px}
.step,.axis{grid-template-columns:1fr auto;padding:8px 10px}
.step .track,.axis .ruler{grid-column:1/3;grid-row:2}
.step .dur{grid-column:2;grid-row:1}
.axis>.spacer{display:none}
.details{grid-column:1/3}
.scroll{overflow-x:auto}
section.actions label{min-width:0;width:100%}
.tick:nth-child(even) span{display:none}
}
"""

SCRIPT = """
(function(){
var KEY='workkit-workflow-token',POLL=__POLL_MS__,timer=null,last=null,grace=0,live=null;
function token(){try{return sessionStorage.getItem(KEY)||''}catch(e){return ''}}
function headers(h){h=h||{};var t=token();if(t)h['authorization']='Bearer '+t;return h}
function say(text,bad){var a=document.getElementById('answer');if(!a)return;a.textContent=text;a.className=bad?'err':''}
function settled(){var s=live&&live.querySelector('[data-settled]');return !s||s.getAttribute('data-settled')==='1'}
function mark(){var m=document.getElementById('livemark');if(!m)return;var on=!settled();
m.className=on?'live on':'live';m.textContent=on?'live':''}
function schedule(){clearTimeout(timer);timer=null;mark();if(!settled()||grace-->0)timer=setTimeout(refresh,POLL)}
function get(kind){var u=new URL(location.href);u.searchParams.set('fragment',kind);
return fetch(u.toString(),{headers:headers(),cache:'no-store'}).then(function(r){
if(r.status===401){say('The token was refused: enter the API token.',true);return null}
return r.ok?r.text():null})}
function swap(html){if(html===last)return;var open={};
live.querySelectorAll('details[open][data-key]').forEach(function(d){open[d.getAttribute('data-key')]=1});
live.innerHTML=html;last=html;live.setAttribute('data-swaps',String(+(live.getAttribute('data-swaps')||0)+1));
live.querySelectorAll('details[data-key]').forEach(function(d){if(open[d.getAttribute('data-key')])d.open=true})}
function refresh(){get('1').then(function(html){if(html!==null)swap(html);schedule()},
function(){timer=setTimeout(refresh,POLL)})}
function load(){get('main').then(function(html){if(html===null)return;document.querySelector('main').innerHTML=html;init()})}
function body(form){var verb=form.getAttribute('data-verb'),e=form.elements;
if(verb==='cancel')return e.reason.value?{reason:e.reason.value}:{};
if(verb==='pause'||verb==='unpause')return {};
if(verb==='restart'){var b={from_step:e.from_step.value};if(e.new_id.value)b.execution_id=e.new_id.value;return b}
var ev={type:e.type.value};if(e.event_id.value)ev.id=e.event_id.value;
if(e.payload.value.trim())ev.payload=JSON.parse(e.payload.value);return ev}
function done(verb,a){if(verb==='cancel')return a.cancelled?'Cancelled.':'It had already finished: nothing to cancel.';
if(verb==='event')return a.accepted?'Event delivered.':'Duplicate event id: it was delivered before.';
if(verb==='pause')return a.paused?'Paused: no new step starts until it continues.':'It was already paused.';
if(verb==='unpause')return a.unpaused?'Continued.':'It was not paused.';return null}
function restarted(id){say('Restarted as ');var a=document.createElement('a');a.id='restarted';a.textContent=id;
a.href=live.getAttribute('data-base')+'executions/'+encodeURIComponent(id);document.getElementById('answer').appendChild(a)}
function act(form){var verb=form.getAttribute('data-verb'),b;
try{b=body(form)}catch(e){say('The payload is not JSON: '+e.message,true);return}
say('Sending…');var url=live.getAttribute('data-api')+'/executions/'+encodeURIComponent(live.getAttribute('data-id'))+'/'+verb;
fetch(url,{method:'POST',headers:headers({'content-type':'application/json'}),body:JSON.stringify(b)}).then(function(r){
return r.json().then(function(j){return {ok:r.ok,j:j}},function(){return {ok:false,j:{error:{message:'HTTP '+r.status}}}})}).then(function(x){
if(!x.ok){say((x.j.error&&x.j.error.message)||'refused',true);return}
grace=5;var text=done(verb,x.j);if(text===null)restarted(x.j.execution_id);else{say(text);refresh()}},
function(e){say('The server did not answer: '+e,true)})}
function init(){live=document.getElementById('live');last=null;var box=document.getElementById('tokenform');
if(box&&token())box.elements.token.placeholder='kept in this tab (type to replace)';
if(box)box.addEventListener('submit',function(ev){ev.preventDefault();
try{sessionStorage.setItem(KEY,box.elements.token.value)}catch(e){}box.elements.token.value='';say('Token kept for this tab.');
if(live&&live.hasAttribute('data-load'))load();else refresh()});
document.querySelectorAll('form[data-verb]').forEach(function(f){f.addEventListener('submit',function(ev){ev.preventDefault();act(f)})});
if(!live)return;if(live.hasAttribute('data-load')){if(token())load();return}
if(!settled())refresh();else mark()}
init();
})();
""".replace("__POLL_MS__", str(POLL_MS))


def token_box() -> str:
    return (
        "<form id='tokenform' class='tokenbox'>API token <input type='password' name='token' "
        "autocomplete='off' placeholder='API_TOKEN'> <button>use</button> "
        "<span class='why'>kept in this tab only (sessionStorage), sent as a bearer token</span></form>"
    )


def actions_panel(actions: Actions, steps: Sequence[str]) -> str:
    """The cancel, pause, continue, event and restart forms (disabled, with the reason,
    when read-only)."""
    disabled = "" if actions.api is not None else " disabled"
    why = f"<p class='why' id='readonly'>{escape(actions.why_not)}</p>" if actions.api is None else ""
    options = "".join(f"<option>{escape(name)}</option>" for name in dict.fromkeys(steps))
    restart = (
        "<form data-verb='restart'><label>restart from</label>"
        f"<select name='from_step'>{options}</select>"
        "<input name='new_id' placeholder='new execution id (optional)'>"
        "<button>restart</button></form>"
        if steps
        else ""
    )
    return (
        f"<h2>Actions</h2><section class='actions'><fieldset{disabled}>{why}"
        "<form data-verb='cancel'><label>cancel</label>"
        "<input name='reason' placeholder='reason (optional)'><button>cancel execution</button></form>"
        "<form data-verb='pause'><label>pause</label><button>pause</button></form>"
        "<form data-verb='unpause'><label>continue</label><button>continue</button></form>"
        "<form data-verb='event'><label>send event</label><input name='type' placeholder='type' required>"
        "<textarea name='payload' placeholder='JSON payload (optional)'></textarea>"
        "<input name='event_id' placeholder='event id (optional)'><button>send</button></form>"
        f"{restart}</fieldset><p id='answer' role='status'></p></section>"
    )


def script() -> str:
    return f"<script>{SCRIPT}</script>"
