// Opens ComfyUI's real frontend (served by a running ComfyUI) in Debian's headless Chromium,
// driven by playwright-core, loads the given UI-format workflows and prints one JSON report.
//
//   node load_workflows.mjs --url http://127.0.0.1:PORT --node-dir .host/node \
//        --shots test-artifacts/frontend [--chromium /usr/bin/chromium] a.json b.json ...
//
// The page may only talk to the ComfyUI server: every other request (the frontend asks
// api.comfy.org for release notes and node info) is aborted and listed in the report.
// tests/test_frontend.py judges the report; this script only observes.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

function parseArgs(argv) {
  const opts = { chromium: '/usr/bin/chromium', files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--url') opts.url = argv[++i];
    else if (a === '--node-dir') opts.nodeDir = argv[++i];
    else if (a === '--shots') opts.shots = argv[++i];
    else if (a === '--chromium') opts.chromium = argv[++i];
    else opts.files.push(a);
  }
  if (!opts.url || !opts.nodeDir || !opts.shots) throw new Error('need --url, --node-dir and --shots');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
// playwright-core lives in the host folder (scripts/setup_host.sh installs it there from
// tests/frontend/package-lock.json), not beside this script.
const require = createRequire(path.resolve(opts.nodeDir) + '/');
const { chromium } = require('playwright-core');
fs.mkdirSync(opts.shots, { recursive: true });

const serverOrigin = new URL(opts.url).origin;
const report = { blocked: [], startupErrors: [], workflows: [] };

// No first-run template browser over the canvas, no minimap, and text drawn at any zoom
// (the screenshots show whole workflows zoomed out). These are this server's user settings.
const settings = [['Comfy.TutorialCompleted', true], ['Comfy.Minimap.Visible', false],
                  ['LiteGraph.Canvas.MinFontSizeForLOD', 1]];
for (const [id, value] of settings) {
  await fetch(`${opts.url}/api/settings/${id}`, { method: 'POST', body: JSON.stringify(value) });
}

const browser = await chromium.launch({
  executablePath: opts.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(serverOrigin + '/') || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    report.blocked.push(url);
    return route.abort();
  });
  let errors = report.startupErrors;
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // Resource failures are the aborted outside requests above and 404s of optional files.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text().slice(0, 500)}`);
  });

  await page.goto(opts.url);
  await page.waitForFunction(
    () => window.app?.vueAppReady && window.app.graph && window.LiteGraph?.registered_node_types?.FateZeroLoadVideo,
    null, { timeout: 120000 });
  report.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  // The "Introducing Nodes 2.0" banner only covers the canvas; close it (best effort).
  await page.evaluate(() => {
    const text = [...document.querySelectorAll('span')].find((s) => s.textContent.includes('Introducing Nodes 2.0'));
    text?.parentElement?.parentElement?.querySelector('button.right-4')?.click();
  });

  // --- the node library: the pack's nodes as the frontend registered them, and the sidebar tree
  report.packNodes = await page.evaluate(() => Object.entries(window.LiteGraph.registered_node_types)
    .filter(([, cls]) => String(cls.nodeData?.python_module ?? '').includes('ComfyUI-FateZero'))
    .map(([type, cls]) => ({ type, display: cls.nodeData.display_name, category: cls.nodeData.category })));
  await page.click('button.node-library-tab-button');
  const folder = page.locator('[role=treeitem][aria-level="1"][aria-label="FateZero"]');
  await folder.waitFor({ timeout: 20000 });
  report.libraryTopLevel = await page.evaluate(() =>
    [...document.querySelectorAll('[role=treeitem][aria-level="1"]')].map((e) => e.getAttribute('aria-label')));
  await folder.locator('.p-tree-node-content').first().click();
  await page.waitForFunction(
    () => document.querySelector('[role=treeitem][aria-level="1"][aria-label="FateZero"]')?.getAttribute('aria-expanded') === 'true');
  await page.waitForTimeout(500);
  report.libraryFateZero = await page.evaluate(() =>
    [...document.querySelectorAll('[role=treeitem][aria-level="1"][aria-label="FateZero"] [role=treeitem]')]
      .map((e) => e.getAttribute('aria-label')));
  report.libraryShot = path.join(opts.shots, 'node_library.png');
  await page.screenshot({ path: report.libraryShot });
  await page.click('button.node-library-tab-button');  // close the sidebar again

  // --- each workflow, as a user's file drop does it (app.loadGraphData with the parsed file)
  for (const file of opts.files) {
    const result = { file, errors: [] };
    errors = result.errors;
    const data = JSON.parse(fs.readFileSync(file, 'utf8'));
    const name = path.basename(file);
    Object.assign(result, await page.evaluate(async ({ data, name }) => {
      const app = window.app;
      const registered = window.LiteGraph.registered_node_types;
      const missingTypes = [...new Set(data.nodes.map((n) => n.type).filter((t) => !(t in registered)))];
      let loadError = null;
      try {
        await app.loadGraphData(data, true, true, name);
      } catch (e) {
        loadError = String(e?.stack ?? e);
      }
      return { missingTypes, loadError };
    }, { data, name }));
    await page.waitForTimeout(1500);  // dialogs and toasts appear asynchronously
    Object.assign(result, await page.evaluate(async () => {
      const app = window.app;
      const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
      const nodes = app.graph.nodes.map((n) => ({
        id: n.id, type: n.type, title: n.title, hasErrors: !!n.has_errors,
        registered: !!n.constructor?.nodeData || ['Note', 'MarkdownNote', 'Reroute', 'PrimitiveNode'].includes(n.type),
      }));
      const dialogs = [...document.querySelectorAll('.p-dialog, [role=dialog]')].filter(visible)
        .map((d) => d.textContent.trim().slice(0, 4000));
      const errorToasts = [...document.querySelectorAll('.p-toast-message-error')].filter(visible)
        .map((t) => t.textContent.trim().slice(0, 500));
      const prompt = await app.graphToPrompt();
      return { nodes, dialogs, errorToasts, prompt: prompt.output, serialized: app.graph.serialize() };
    }));
    // A dialog is reported above (a workflow whose loaders list files in properties.models opens
    // the missing-models dialog on a server without them); close it, as a user would, so the
    // screenshots and the next workflow see the canvas.
    if (result.dialogs.length) {
      await page.keyboard.press('Escape');
      await page.waitForTimeout(500);
    }
    await page.evaluate(() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView'));
    await page.waitForTimeout(800);
    result.screenshot = path.join(opts.shots, name.replace(/\.json$/, '.png'));
    await page.screenshot({ path: result.screenshot });
    // The graph alone (nodes and groups, a small margin), for the README: its box on the page
    // from the canvas transform (page = canvas rect + (graph + offset) * scale).
    result.graphBox = await page.evaluate(() => {
      const canvas = window.app.canvas;
      const title = window.LiteGraph.NODE_TITLE_HEIGHT;
      const boxes = canvas.graph.nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]);
      for (const g of canvas.graph.groups ?? canvas.graph._groups ?? []) boxes.push([...(g.boundingRect ?? g._bounding)]);
      const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
      const x1 = Math.max(...boxes.map((b) => b[0] + b[2])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
      const rect = canvas.canvas.getBoundingClientRect();
      const { scale, offset } = canvas.ds;
      const margin = 12;
      const graph = { left: rect.left + (x0 + offset[0]) * scale - margin, top: rect.top + (y0 + offset[1]) * scale - margin,
                      right: rect.left + (x1 + offset[0]) * scale + margin, bottom: rect.top + (y1 + offset[1]) * scale + margin };
      // the page clip, inside the window (the test checks the unclipped box fits it)
      const left = Math.max(0, graph.left), top = Math.max(0, graph.top);
      const right = Math.min(window.innerWidth, graph.right), bottom = Math.min(window.innerHeight, graph.bottom);
      return { x: Math.round(left), y: Math.round(top), width: Math.round(right - left), height: Math.round(bottom - top),
               graph };
    });
    result.graphShot = path.join(opts.shots, name.replace(/\.json$/, '.graph.png'));
    const { graph, ...clip } = result.graphBox;
    await page.screenshot({ path: result.graphShot, clip });
    report.workflows.push(result);
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
