#!/usr/bin/env python3
"""Drives pushgate's status pages in headless Chromium (Debian's chromium + chromium-driver,
through selenium), as a person would. Called by tests/status_ui.rs, which starts the gateways
and pushes the groups.

Usage: status_ui.py status BASE_URL SHOT_DIR XSS_VALUE
       status_ui.py cluster BASE_URL SHOT_DIR NODE_ID[,NODE_ID...]

Prints one `OK <step>` line per step passed; exits 1 with a message at the first step that fails.
"""
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds: a bounded wait for a condition, never a timed assertion


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1200,800", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=opts)


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def wait(d, cond, what):
    try:
        return WebDriverWait(d, WAIT).until(cond)
    except TimeoutException:
        src = d.page_source
        fail(f"{what} (waited {WAIT}s); page:\n{src[src.find('<main>'):][:6000]}")


def groups(d):
    return d.find_elements(By.CSS_SELECTOR, "details.grp")


def shot(d, shot_dir, name, height=None):
    if height:
        d.set_window_size(1200, height)
    path = os.path.join(shot_dir, name)
    d.save_screenshot(path)
    print(f"OK screenshot {path}", flush=True)


def status(d, base, shot_dir, xss):
    d.get(base + "/")
    wait(d, lambda d: len(groups(d)) >= 5, "the page lists the pushed groups")
    n = len(groups(d))
    # Every group row starts collapsed; job and instance come first.
    if any(g.get_attribute("open") for g in groups(d)):
        fail("a group is open on first load")
    first_labels = [e.get_attribute("class") for e in
                    groups(d)[0].find_elements(By.CSS_SELECTOR, "summary .lbl")]
    if first_labels[:2] != ["lbl job", "lbl instance"]:
        fail(f"job and instance are not first: {first_labels}")
    print(f"OK loaded {n} groups", flush=True)

    # The XSS-ish label value is shown as text, and no script of it ran.
    if d.execute_script("return window.__pwned === true"):
        fail("a label value ran as script")
    page_text = d.find_element(By.TAG_NAME, "body").text
    if xss not in page_text:
        fail(f"the label value {xss!r} is not shown as text")
    print("OK label value rendered inert", flush=True)

    # A group expands on a click on its row, its families show HELP and TYPE, and the state
    # survives a reload (localStorage).
    hist = [g for g in groups(d) if "job=\"batch_hist\"" in g.text][0]
    hist.find_element(By.CSS_SELECTOR, "summary").click()
    wait(d, lambda d: [g for g in groups(d) if "batch_hist" in g.text][0].get_attribute("open"),
         "the group opens on a click")
    hist = [g for g in groups(d) if "batch_hist" in g.text][0]
    fam = hist.find_element(By.CSS_SELECTOR, "details.fam summary")
    fam.click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "details.grp[open] table.buckets th"),
         "the histogram's buckets show as a table")
    if not hist.find_elements(By.CSS_SELECTOR, ".help") or not hist.find_elements(By.CSS_SELECTOR, ".type"):
        fail("HELP and TYPE badges are missing")
    print("OK group expands, histogram as a table", flush=True)
    shot(d, shot_dir, "status-page.png", 760)
    d.refresh()
    wait(d, lambda d: any("batch_hist" in g.text and g.get_attribute("open") for g in groups(d)),
         "the open group stays open after a reload")
    print("OK open state kept across reloads", flush=True)

    # The Status tab lists the startup flags.
    d.find_element(By.ID, "status-link").click()
    wait(d, lambda d: d.find_element(By.ID, "status").is_displayed(), "the Status tab shows")
    flags = d.find_element(By.ID, "flags").text
    if "web.enable-admin-api" not in flags:
        fail("the Status tab does not list the flags: " + flags[:500])
    print("OK status tab lists the flags", flush=True)
    shot(d, shot_dir, "status-tab.png", 600)

    # The filter narrows the list (server side: the form's query). Open groups forgotten first,
    # so the screenshot shows the collapsed rows.
    d.execute_script("localStorage.clear()")
    d.get(base + "/")
    box = wait(d, EC.presence_of_element_located((By.ID, "q")), "the filter box")
    box.clear()
    box.send_keys("job=batch_")
    d.find_element(By.ID, "apply").click()
    wait(d, lambda d: "q=job" in d.current_url and 0 < len(groups(d)) < n,
         f"the filter narrows the {n} groups")
    narrowed = groups(d)
    if any("job=\"batch_" not in g.find_element(By.CSS_SELECTOR, "summary").text for g in narrowed):
        fail("a group that does not match the filter is listed")
    print(f"OK filter narrows {n} to {len(narrowed)}", flush=True)
    shot(d, shot_dir, "status-filter.png", 390)

    # A group is deleted after the confirm (dismissed first: nothing changes).
    d.get(base + "/?q=job%3Dto_delete")
    wait(d, lambda d: len(groups(d)) == 1, "the group to delete is listed")
    btn = groups(d)[0].find_element(By.CSS_SELECTOR, "button.del")
    btn.click()
    alert = wait(d, EC.alert_is_present(), "the confirm dialog")
    if "to_delete" not in alert.text:
        fail("the confirm does not name the group: " + alert.text)
    alert.dismiss()
    d.refresh()
    wait(d, lambda d: len(groups(d)) == 1, "the group stays after a dismissed confirm")
    groups(d)[0].find_element(By.CSS_SELECTOR, "button.del").click()
    wait(d, EC.alert_is_present(), "the confirm dialog").accept()
    wait(d, lambda d: d.find_elements(By.ID, "none"), "the deleted group is gone")
    print("OK group deleted after the confirm", flush=True)

    # Delete All Groups (the admin API is on).
    d.get(base + "/")
    wait(d, lambda d: len(groups(d)) > 1, "groups before Delete All")
    d.find_element(By.ID, "delete-all").click()
    wait(d, EC.alert_is_present(), "the Delete All confirm").accept()
    wait(d, lambda d: d.find_elements(By.ID, "none") and not groups(d), "every group is gone")
    print("OK delete all", flush=True)


def cluster(d, base, shot_dir, nodes):
    d.get(base + "/cluster")
    rows = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#members tr.member"),
                "the members table")
    text = d.find_element(By.ID, "members").text
    for n in nodes:
        if n not in text:
            fail(f"member {n} is not listed:\n{text}")
    if len(rows) != len(nodes):
        fail(f"{len(rows)} member rows for {len(nodes)} nodes:\n{text}")
    if text.count("active") != len(nodes):
        fail("not every member is active:\n" + text)
    print(f"OK cluster lists {len(nodes)} members", flush=True)
    box = d.find_element(By.ID, "key")
    box.send_keys("/job/nightly/instance/db-1")
    d.find_element(By.ID, "find").click()
    owners = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#owners li.owner"), "the owners")
    names = [o.text for o in owners]
    if not names or any(not any(n in o for n in nodes) for o in names):
        fail(f"owners {names} are not members {nodes}")
    print("OK owners " + ", ".join(names), flush=True)
    shot(d, shot_dir, "cluster-page.png", 600)


def main():
    mode, base, shot_dir, arg = sys.argv[1:5]
    d = browser()
    try:
        if mode == "status":
            status(d, base, shot_dir, arg)
        elif mode == "cluster":
            cluster(d, base, shot_dir, arg.split(","))
        else:
            fail("unknown mode " + mode)
    finally:
        d.quit()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
