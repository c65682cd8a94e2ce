// Drives `crosspool serve`'s page in headless Chromium (playwright-core, tools/.browser):
// chooses the query image in the page's file input, as a user does, waits for the hits and
// their thumbnails, takes a screenshot, and prints what the page shows as JSON.
// Usage: node tools/browser_check.cjs URL QUERY_IMAGE SCREENSHOT
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, ".browser/node_modules/playwright-core"));

const [url, query, screenshot] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // This machine's closed network refuses Chromium's background connections.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    await page.goto(url);
    await page.waitForFunction(() => !document.getElementById("about").textContent.startsWith("Loading"));
    await page.fill("#top", "8");
    await page.setInputFiles("#file", query);
    await page.waitForSelector(".hit", { timeout: 120000 });
    // Every thumbnail shown, not only requested.
    await page.waitForFunction(() => [...document.querySelectorAll(".hit img")]
      .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 60000 });
    const shown = await page.evaluate(() => ({
      about: document.getElementById("about").textContent,
      status: document.getElementById("status").textContent,
      query_shown: document.getElementById("query").naturalWidth > 0,
      hits: [...document.querySelectorAll(".hit")].map((h) => ({
        path: h.dataset.path,
        text: h.querySelector(".name").textContent,
        thumbnail: h.querySelector("img") ? h.querySelector("img").getAttribute("src") : null,
        thumbnail_width: h.querySelector("img") ? h.querySelector("img").naturalWidth : 0,
      })),
    }));
    await page.screenshot({ path: screenshot, fullPage: true });
    shown.problems = problems;
    console.log(JSON.stringify(shown));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
