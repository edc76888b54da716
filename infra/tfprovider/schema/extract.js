#!/usr/bin/env node
// extract.js regenerates the provider schemas that the stand-in provider serves
// (infra/tfprovider/schema/*.json) from the code that cdktf generated from the
// real providers: @cdktf/provider-google 16.12.1 is generated from
// hashicorp/google 6.50.0 and @cdktf/provider-archive 11.0.1 from
// hashicorp/archive 2.7.1. Run it through `make tf-schema` (which installs the
// two npm packages into a temporary directory), or by hand:
//
//   node extract.js NODE_MODULES_DIR PACKAGE TYPES_FILE OUT.json
//
// TYPES_FILE lists the resource types ("resource google_pubsub_topic") and
// data sources ("data google_project") to extract, one a line. The output is
// a subset of `terraform providers schema -json` for one provider:
//   {"provider": BLOCK, "resource_schemas": {T: BLOCK}, "data_source_schemas": {T: BLOCK}}
// with BLOCK = {"attributes": {name: {"type", "required"?, "optional"?, "computed"?}},
//               "block_types": {name: {"nesting_mode", "min_items"?, "max_items"?, "block": BLOCK}}}
//
// What the generated code carries: every attribute and block name, its type, which
// blocks hold at most one element, list/set nesting, required vs optional, and
// (top level) computed. What it does not: Optional+Computed inside nested blocks
// (extracted as optional), sensitivity, defaults, ForceNew and enum validation.
"use strict";
const fs = require("fs");
const path = require("path");

let current = "";
function fail(msg) {
  process.stderr.write("extract.js: " + current + ": " + msg + "\n");
  process.exit(1);
}

const [nodeModules, pkg, typesFile, outFile] = process.argv.slice(2);
if (!outFile) fail("usage: extract.js NODE_MODULES_DIR PACKAGE TYPES_FILE OUT.json");
const libDir = path.join(nodeModules, pkg, "lib");

// Converts "google_pubsub_topic" (resource) or "google_project" (data source) to
// the generated directory name: the provider prefix is kept for data sources only.
function dirFor(kind, type, providerName) {
  let rest = type.startsWith(providerName + "_") ? type.slice(providerName.length + 1) : type;
  if (kind === "data") rest = "data_" + type;
  return rest.replace(/_/g, "-");
}

const SIMPLE = { string: "string", number: "number", boolean: "bool" };
const COLLECTION = {
  stringList: ["list", "string"], numberList: ["list", "number"], booleanList: ["list", "bool"],
  stringMap: ["map", "string"], numberMap: ["map", "number"], booleanMap: ["map", "bool"],
};

// Source holds one generated file and the few structural look-ups the schema needs.
class Source {
  constructor(js, dts) {
    this.js = js;
    this.dts = dts;
  }
  // body returns the text of a top-level `class NAME ...{` or `function NAME(` up to
  // the next top-level declaration.
  body(prefix) {
    const i = this.js.indexOf("\n" + prefix);
    if (i < 0) return null;
    const rest = this.js.slice(i + 1);
    const next = rest.slice(1).search(/\n(class |function |exports\.)/);
    return next < 0 ? rest : rest.slice(0, next + 1);
  }
  // hclAttrs parses an `attrs = { name: { value: ..., isBlock, type, storageClassType }, ... }` table.
  hclAttrs(text) {
    const out = [];
    const re = /\n\s+([a-z0-9_]+): \{\n\s+value: ([^\n]*),\n\s+isBlock: (true|false),\n\s+type: "([a-z]+)",\n\s+storageClassType: "([A-Za-z0-9]+)",/g;
    let m;
    while ((m = re.exec(text)) !== null) {
      const value = m[2];
      const fn = /([a-z][A-Za-z0-9]*)ToHclTerraform, (true|false)\)|([a-z][A-Za-z0-9]*)ToHclTerraform\(/.exec(value);
      const prop = /struct\.([A-Za-z0-9_]+)\)|this\._([A-Za-z0-9_]+)(\.internalValue)?\)?$/.exec(value);
      out.push({
        name: m[1], isBlock: m[3] === "true", type: m[4], storage: m[5],
        fn: fn ? (fn[1] || fn[3]) : null,
        prop: prop ? (prop[1] || prop[2]) : null,
      });
    }
    return out;
  }
  // optionalProps returns, for interface NAME in the .d.ts, which properties are optional.
  interfaceProps(name) {
    const i = this.dts.indexOf("export interface " + name + " ");
    if (i < 0) return null;
    const end = this.dts.indexOf("\n}", i);
    const props = {};
    const re = /readonly ([A-Za-z0-9_]+)(\??): /g;
    const text = this.dts.slice(i, end);
    let m;
    while ((m = re.exec(text)) !== null) props[m[1]] = m[2] === "?";
    return props;
  }
}

function capital(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

// getterType returns the cty type of a computed attribute from its getter body, or,
// for nested objects, {nested: ClassName, list: bool, set: bool}.
function getterType(src, classText, getterBody) {
  let m;
  if ((m = /cdktf\.Fn\.tolist\(this\.getListAttribute\(/.exec(getterBody))) return ["set", "string"];
  if ((m = /cdktf\.Fn\.tolist\(this\.getNumberListAttribute\(/.exec(getterBody))) return ["set", "number"];
  const simple = {
    getStringAttribute: "string", getNumberAttribute: "number", getBooleanAttribute: "bool",
    getListAttribute: ["list", "string"], getNumberListAttribute: ["list", "number"],
    getBooleanListAttribute: ["list", "bool"],
    getStringMapAttribute: ["map", "string"], getNumberMapAttribute: ["map", "number"],
    getBooleanMapAttribute: ["map", "bool"], getAnyMapAttribute: ["map", "dynamic"],
    interpolationForAttribute: "dynamic",
  };
  if ((m = /this\.(get[A-Za-z]+Attribute|interpolationForAttribute)\(/.exec(getterBody))) {
    if (!(m[1] in simple)) fail("unknown getter " + m[1]);
    return simple[m[1]];
  }
  if ((m = /return this\._([A-Za-z0-9_]+);/.exec(getterBody))) {
    const field = new RegExp("this\\._" + m[1] + " = new ([A-Za-z0-9_.]+)\\(this, \"[a-z0-9_]+\"(, (true|false))?\\)").exec(classText);
    if (!field) fail("no field initialiser for " + m[1]);
    const cls = field[1];
    const cdktfTypes = {
      "cdktf.StringMap": ["map", "string"], "cdktf.NumberMap": ["map", "number"],
      "cdktf.BooleanMap": ["map", "bool"], "cdktf.AnyMap": ["map", "dynamic"],
      "cdktf.StringMapList": ["list", ["map", "string"]], "cdktf.NumberMapList": ["list", ["map", "number"]],
      "cdktf.BooleanMapList": ["list", ["map", "bool"]], "cdktf.AnyMapList": ["list", ["map", "dynamic"]],
    };
    if (cls in cdktfTypes) return cdktfTypes[cls];
    if (cls.endsWith("OutputReference")) return { nested: cls.slice(0, -"OutputReference".length), list: false, set: false };
    if (cls.endsWith("List")) return { nested: cls.slice(0, -"List".length), list: true, set: field[3] === "true" };
    fail("unknown field class " + cls);
  }
  return null;
}

// computedObject returns the cty object type of a computed-only nested struct, read
// from the getters of its OutputReference class.
function computedObject(src, structName) {
  const text = src.body("class " + structName + "OutputReference ");
  if (!text) fail("no OutputReference for " + structName);
  const attrs = {};
  const re = /\n    get ([A-Za-z0-9_]+)\(\) \{\n([\s\S]*?)\n    \}/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m[1] === "internalValue") continue;
    const nameM = /\('([a-z0-9_]+)'\)|new [A-Za-z0-9_.]+\(this, "([a-z0-9_]+)"/.exec(m[2]);
    let tfName = nameM ? (nameM[1] || nameM[2]) : null;
    const t = getterType(src, text, m[2]);
    if (!t) continue;
    if (!tfName) {
      const f = new RegExp("this\\._" + /this\._([A-Za-z0-9_]+)/.exec(m[2])[1] + " = new [A-Za-z0-9_.]+\\(this, \"([a-z0-9_]+)\"").exec(text);
      tfName = f[1];
    }
    attrs[tfName] = t.nested ? nestedType(src, t) : t;
  }
  return ["object", attrs];
}

function nestedType(src, t) {
  const obj = computedObject(src, t.nested);
  return t.list ? [t.set ? "set" : "list", obj] : ["list", obj];
}

function attrType(a) {
  if (a.type === "simple") {
    if (!(a.storage in SIMPLE)) fail("unknown simple storage " + a.storage + " for " + a.name);
    return SIMPLE[a.storage];
  }
  if (a.storage in COLLECTION) {
    const [kind, elem] = COLLECTION[a.storage];
    if (a.type === "set") return ["set", elem];
    if (a.type === "map") return ["map", elem];
    return [kind, elem];
  }
  fail("unknown attribute storage " + a.type + "/" + a.storage + " for " + a.name);
}

// settableBlock builds the BLOCK of nested struct fnPrefix (e.g. "pubsubSubscriptionPushConfig").
function settableBlock(src, fnPrefix) {
  const structName = capital(fnPrefix);
  const fnText = src.body("function " + fnPrefix + "ToHclTerraform(");
  if (!fnText) fail("no hcl function for " + fnPrefix);
  const props = src.interfaceProps(structName) || {};
  const block = { attributes: {}, block_types: {} };
  for (const a of src.hclAttrs(fnText)) {
    const optional = a.prop in props ? props[a.prop] : true;
    if (a.isBlock) {
      block.block_types[a.name] = blockType(src, a, structName, !optional);
    } else {
      block.attributes[a.name] = optional ? { type: attrType(a), optional: true } : { type: attrType(a), required: true };
    }
  }
  // Computed-only fields: getters without a setter in the OutputReference class.
  const cls = src.body("class " + structName + "OutputReference ");
  if (cls) {
    const re = /\n    get ([A-Za-z0-9_]+)\(\) \{\n([\s\S]*?)\n    \}/g;
    let m;
    while ((m = re.exec(cls)) !== null) {
      const g = m[1];
      if (g === "internalValue" || cls.includes("\n    set " + g + "(")) continue;
      if (g.endsWith("Input") && cls.includes("\n    get " + g.slice(0, -5) + "() {")) continue;
      const t = getterType(src, cls, m[2]);
      if (!t) continue;
      const nameM = /\('([a-z0-9_]+)'\)/.exec(m[2]);
      let tfName = nameM ? nameM[1] : null;
      if (!tfName) {
        const field = /this\._([A-Za-z0-9_]+)/.exec(m[2]);
        tfName = new RegExp("this\\._" + field[1] + " = new [A-Za-z0-9_.]+\\(this, \"([a-z0-9_]+)\"").exec(cls)[1];
      }
      if (tfName in block.attributes || tfName in block.block_types) continue;
      block.attributes[tfName] = { type: t.nested ? nestedType(src, t) : t, computed: true };
    }
  }
  return block;
}

// blockType returns the block_types entry for hcl attribute a of a struct or resource.
function blockType(src, a, ownerClassText, required) {
  if (!a.fn) fail("block " + a.name + " has no nested function");
  const structName = capital(a.fn);
  const bt = { nesting_mode: "list", block: settableBlock(src, a.fn) };
  const single = src.js.includes("class " + structName + "OutputReference ") && !src.js.includes("class " + structName + "List ");
  if (a.type === "set") bt.nesting_mode = "set";
  if (a.type === "struct") bt.nesting_mode = "single"; // timeouts
  if (single && bt.nesting_mode === "list") bt.max_items = 1;
  if (required) bt.min_items = 1;
  return bt;
}

function topLevel(src, className) {
  const text = src.body("class " + className + " extends cdktf.");
  if (!text) fail("no class " + className);
  const flags = {};
  const re = /\/\/ ([a-z0-9_]+) - computed: (true|false), optional: (true|false), required: (true|false)\n\s+([^\n]*)/g;
  let m;
  const firstLines = {};
  while ((m = re.exec(text)) !== null) {
    flags[m[1]] = { computed: m[2] === "true", optional: m[3] === "true", required: m[4] === "true" };
    firstLines[m[1]] = m[5];
  }
  const synth = /synthesizeHclAttributes\(\) \{([\s\S]*?)\n    \}/.exec(text);
  const hcl = synth ? src.hclAttrs(synth[1]) : [];
  const block = { attributes: {}, block_types: {} };
  const seen = {};
  // Simple settable attributes carry no flag comment: required-ness comes from the
  // config interface (`readonly name: string` vs `readonly name?: string`).
  const props = src.interfaceProps(className + "Config") || {};
  for (const a of hcl) {
    seen[a.name] = true;
    const f = flags[a.name] || (a.prop in props && !props[a.prop] ? { required: true } : { optional: true });
    if (a.isBlock) {
      block.block_types[a.name] = blockType(src, a, text, f.required);
      continue;
    }
    const attr = { type: attrType(a) };
    if (f.required) attr.required = true;
    if (f.optional) attr.optional = true;
    if (f.computed) attr.computed = true;
    if (!f.required && !f.optional && !f.computed) attr.optional = true;
    block.attributes[a.name] = attr;
  }
  // Computed-only attributes appear only as getters.
  const getRe = /\n    \/\/ ([a-z0-9_]+) - computed: true, optional: false, required: false\n    get [A-Za-z0-9_]+\(\) \{\n([\s\S]*?)\n    \}/g;
  while ((m = getRe.exec(text)) !== null) {
    if (seen[m[1]]) continue;
    const t = getterType(src, text, m[2]);
    if (!t) fail("no type for computed " + m[1]);
    block.attributes[m[1]] = { type: t.nested ? nestedType(src, t) : t, computed: true };
    seen[m[1]] = true;
  }
  // Computed-only complex attributes are initialised in the constructor.
  for (const name of Object.keys(flags)) {
    if (seen[name]) continue;
    const f = flags[name];
    const line = firstLines[name];
    const fm = /this\._[A-Za-z0-9_]+ = new ([A-Za-z0-9_.]+)\(this, "[a-z0-9_]+"(, (true|false))?\)/.exec(line);
    if (!fm) continue;
    const t = getterType(src, text, "return this._" + /this\._([A-Za-z0-9_]+)/.exec(line)[1] + ";");
    block.attributes[name] = { type: t.nested ? nestedType(src, t) : t, computed: true };
    if (f.optional) block.attributes[name].optional = true;
    seen[name] = true;
  }
  if (!("id" in block.attributes)) block.attributes.id = { type: "string", optional: true, computed: true };
  return block;
}

function className(src, kind, type) {
  const re = new RegExp("\\nclass ([A-Za-z0-9_]+) extends cdktf\\." + (kind === "data" ? "TerraformDataSource" : kind === "provider" ? "TerraformProvider" : "TerraformResource") + " ");
  const m = re.exec(src.js);
  if (!m) fail("no " + kind + " class for " + type);
  return m[1];
}

function load(dir) {
  const js = fs.readFileSync(path.join(libDir, dir, "index.js"), "utf8");
  const dts = fs.readFileSync(path.join(libDir, dir, "index.d.ts"), "utf8");
  return new Source(js, dts);
}

const providerName = pkg.replace(/^@cdktf\/provider-/, "");
const meta = /providerVersion: '([0-9.]+)'/.exec(fs.readFileSync(path.join(libDir, "provider", "index.js"), "utf8"));
const out = {
  provider_name: providerName,
  provider_version: meta[1],
  generated_from: pkg + "@" + JSON.parse(fs.readFileSync(path.join(nodeModules, pkg, "package.json"), "utf8")).version,
  provider: null,
  resource_schemas: {},
  data_source_schemas: {},
};
const provSrc = load("provider");
out.provider = topLevel(provSrc, className(provSrc, "provider", "provider"));
delete out.provider.attributes.id;
delete out.provider.attributes.alias;
for (const raw of fs.readFileSync(typesFile, "utf8").split("\n")) {
  const line = raw.replace(/#.*/, "").trim();
  if (!line) continue;
  const [kind, type] = line.split(/\s+/);
  if (kind !== "resource" && kind !== "data") fail("bad line: " + line);
  current = type;
  const src = load(dirFor(kind, type, providerName));
  const block = topLevel(src, className(src, kind, type));
  (kind === "data" ? out.data_source_schemas : out.resource_schemas)[type] = block;
}
fs.writeFileSync(outFile, JSON.stringify(out, null, 1) + "\n");
