#!/usr/bin/env python3
"""Writes tests/corpus/secrets.tsv: credentials in the contexts where they
turn up in tool output (shell, .env, YAML, JSON, code, logs, URLs, headers),
and benign look-alikes of them (placeholders, masked values, references to
variables, hashes, ids, public keys).

The formats follow each provider's published token format (prefix, alphabet,
length); the values are random (fixed seed, so the file is reproducible:
`python3 tests/corpus/make_secrets.py > tests/corpus/secrets.tsv`). They were
written from the formats, not from toolgate's rules.

Columns: CLASS<TAB>KIND<TAB>TEXT[<TAB>SECRET]. CLASS is `common` (the
providers most code touches), `other` (the long tail and generic
credentials) or `benign`. A newline in TEXT is written `<NL>`.
"""
import base64
import json
import random
import string

R = random.Random(16)
AL = string.ascii_letters + string.digits
LO = string.ascii_lowercase + string.digits
UP = string.ascii_uppercase + string.digits
HX = "0123456789abcdef"
B64 = AL + "+/"
URL = AL + "_-"
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def r(cs, n):
    return "".join(R.choice(cs) for _ in range(n))


def uuid():
    return f"{r(HX, 8)}-{r(HX, 4)}-4{r(HX, 3)}-{R.choice('89ab')}{r(HX, 3)}-{r(HX, 12)}"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt():
    h = b64u(json.dumps({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}).encode())
    p = b64u(json.dumps({"sub": str(R.randint(1, 10**9)), "iat": R.randint(1.6e9, 1.8e9),
                         "scope": R.choice(["read", "admin", "repo"])}).encode())
    return f"{h}.{p}.{b64u(R.randbytes(32))}"


def pem(kind):
    body = base64.b64encode(R.randbytes(R.choice([180, 240, 300]))).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----", lines[0]


# Provider formats: (kind, [(variable name hint, generator)]).
COMMON = {
    "aws-access-key-id": ("AWS_ACCESS_KEY_ID", lambda: R.choice(["AKIA", "ASIA"]) + r("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
    "aws-secret-access-key": ("AWS_SECRET_ACCESS_KEY", lambda: r(AL + "/+", 40)),
    "gcp-api-key": ("GOOGLE_API_KEY", lambda: "AIza" + r(URL, 35)),
    "gcp-oauth-client-secret": ("GOOGLE_CLIENT_SECRET", lambda: "GOCSPX-" + r(URL, 28)),
    "azure-storage-key": ("AZURE_STORAGE_KEY", lambda: r(B64, 86) + "=="),
    "azure-ad-client-secret": ("AZURE_CLIENT_SECRET", lambda: r(AL, 3) + str(R.randint(0, 9)) + "Q~" + r(AL + "_~.-", 34)),
    "github-classic-pat": ("GITHUB_TOKEN", lambda: "ghp_" + r(AL, 36)),
    "github-oauth": ("GH_TOKEN", lambda: "gho_" + r(AL, 36)),
    "github-app": ("GITHUB_APP_TOKEN", lambda: R.choice(["ghs_", "ghu_"]) + r(AL, 36)),
    "github-fine-grained": ("GITHUB_PAT", lambda: "github_pat_" + r(AL, 22) + "_" + r(AL, 59)),
    "gitlab-pat": ("GITLAB_TOKEN", lambda: "glpat-" + r(URL, 20)),
    "slack-bot": ("SLACK_BOT_TOKEN", lambda: f"xoxb-{R.randint(10**10, 10**12)}-{R.randint(10**10, 10**12)}-{r(AL, 24)}"),
    "slack-user": ("SLACK_USER_TOKEN", lambda: f"xoxp-{R.randint(10**10, 10**12)}-{R.randint(10**10, 10**12)}-{R.randint(10**10, 10**12)}-{r(HX, 32)}"),
    "slack-webhook": ("SLACK_WEBHOOK_URL", lambda: f"https://hooks.slack.com/services/T{r(UP, 8)}/B{r(UP, 10)}/{r(AL, 24)}"),
    "stripe-secret": ("STRIPE_SECRET_KEY", lambda: R.choice(["sk_live_", "rk_live_", "sk_test_"]) + r(AL, R.choice([24, 99]))),
    "stripe-webhook-secret": ("STRIPE_WEBHOOK_SECRET", lambda: "whsec_" + r(AL, 32)),
    "openai": ("OPENAI_API_KEY", lambda: R.choice(["sk-proj-" + r(URL, 156), "sk-" + r(AL, 20) + "T3BlbkFJ" + r(AL, 20), "sk-svcacct-" + r(URL, 74) + "T3BlbkFJ" + r(URL, 74)])),
    "anthropic": ("ANTHROPIC_API_KEY", lambda: "sk-ant-api03-" + r(URL, 93) + "AA"),
    "npm": ("NPM_TOKEN", lambda: "npm_" + r(AL, 36)),
    "pypi": ("PYPI_TOKEN", lambda: "pypi-AgEIcHlwaS5vcmc" + b64u(R.randbytes(80))),
    "docker-hub": ("DOCKERHUB_TOKEN", lambda: "dckr_pat_" + r(URL, 27)),
    "twilio": ("TWILIO_API_KEY", lambda: "SK" + r(HX, 32)),
    "sendgrid": ("SENDGRID_API_KEY", lambda: "SG." + r(URL, 22) + "." + r(URL, 43)),
    "huggingface": ("HF_TOKEN", lambda: "hf_" + r(AL, 34)),
    "jwt": ("ACCESS_TOKEN", jwt),
    "google-oauth-access": ("GOOGLE_ACCESS_TOKEN", lambda: "ya29." + r(URL, 120)),
    "mailgun": ("MAILGUN_API_KEY", lambda: "key-" + r(HX, 32)),
    "shopify": ("SHOPIFY_ACCESS_TOKEN", lambda: R.choice(["shpat_", "shpss_", "shpca_"]) + r(HX, 32)),
}

OTHER = {
    "perplexity": ("PPLX_API_KEY", lambda: "pplx-" + r(AL, 48)),
    "openrouter": ("OPENROUTER_API_KEY", lambda: "sk-or-v1-" + r(HX, 64)),
    "groq": ("GROQ_API_KEY", lambda: "gsk_" + r(AL, 52)),
    "xai": ("XAI_API_KEY", lambda: "xai-" + r(AL, 80)),
    "replicate": ("REPLICATE_API_TOKEN", lambda: "r8_" + r(AL, 37)),
    "langsmith": ("LANGSMITH_API_KEY", lambda: f"lsv2_pt_{r(HX, 32)}_{r(HX, 10)}"),
    "pinecone": ("PINECONE_API_KEY", lambda: f"pcsk_{r(AL, 6)}_{r(AL, 63)}"),
    "langfuse": ("LANGFUSE_SECRET_KEY", lambda: "sk-lf-" + uuid()),
    "fireworks": ("FIREWORKS_API_KEY", lambda: "fw_" + r(AL, 24)),
    "elevenlabs": ("ELEVENLABS_API_KEY", lambda: "sk_" + r(HX, 48)),
    "gitlab-deploy": ("CI_DEPLOY_PASSWORD", lambda: "gldt-" + r(URL, 20)),
    "gitlab-runner": ("RUNNER_TOKEN", lambda: "glrt-" + r(URL, 20)),
    "gitlab-trigger": ("TRIGGER_TOKEN", lambda: "glptt-" + r(HX, 40)),
    "bitbucket": ("BITBUCKET_APP_PASSWORD", lambda: "ATBB" + r(AL, 32)),
    "digitalocean": ("DIGITALOCEAN_TOKEN", lambda: "dop_v1_" + r(HX, 64)),
    "databricks": ("DATABRICKS_TOKEN", lambda: "dapi" + r(HX, 32)),
    "linear": ("LINEAR_API_KEY", lambda: "lin_api_" + r(AL, 40)),
    "telegram": ("TELEGRAM_BOT_TOKEN", lambda: f"{R.randint(10**8, 10**10)}:AA{r(URL, 33)}"),
    "square": ("SQUARE_ACCESS_TOKEN", lambda: "EAAA" + r(AL, 60)),
    "rubygems": ("GEM_HOST_API_KEY", lambda: "rubygems_" + r(HX, 48)),
    "nuget": ("NUGET_API_KEY", lambda: "oy2" + r(LO, 43)),
    "doppler": ("DOPPLER_TOKEN", lambda: "dp.st." + r(LO, 6) + "." + r(AL, 40)),
    "dropbox": ("DROPBOX_TOKEN", lambda: "sl." + r(URL, 138)),
    "heroku": ("HEROKU_API_KEY", lambda: "HRKU-" + r(URL, 60)),
    "vault": ("VAULT_TOKEN", lambda: "hvs." + r(URL, 90)),
    "terraform-cloud": ("TFE_TOKEN", lambda: r(AL, 14) + ".atlasv1." + r(AL, 67)),
    "grafana": ("GRAFANA_TOKEN", lambda: R.choice(["glsa_" + r(AL, 32) + "_" + r(HX, 8), "glc_" + b64u(R.randbytes(60))])),
    "sentry": ("SENTRY_AUTH_TOKEN", lambda: "sntryu_" + r(HX, 64)),
    "new-relic": ("NEW_RELIC_API_KEY", lambda: "NRAK-" + r(UP, 27)),
    "atlassian": ("JIRA_API_TOKEN", lambda: "ATATT3" + r(URL, 186)),
    "hubspot": ("HUBSPOT_TOKEN", lambda: "pat-na1-" + uuid()),
    "1password": ("OP_SERVICE_ACCOUNT_TOKEN", lambda: "ops_eyJ" + r(AL, 200)),
    "flyio": ("FLY_API_TOKEN", lambda: "FlyV1 fm2_" + r(URL, 120)),
    "supabase": ("SUPABASE_ACCESS_TOKEN", lambda: "sbp_" + r(HX, 40)),
    "planetscale": ("PLANETSCALE_TOKEN", lambda: "pscale_tkn_" + r(URL, 43)),
    "postman": ("POSTMAN_API_KEY", lambda: f"PMAK-{r(HX, 24)}-{r(HX, 34)}"),
    "mapbox": ("MAPBOX_SECRET_TOKEN", lambda: "sk.eyJ1Ijoi" + r(URL, 60) + "." + r(URL, 22)),
    "notion": ("NOTION_TOKEN", lambda: "ntn_" + str(R.randint(10**10, 10**11 - 1)) + r(AL, 35)),
    "figma": ("FIGMA_TOKEN", lambda: "figd_" + r(URL, 40)),
    "render": ("RENDER_API_KEY", lambda: "rnd_" + r(AL, 32)),
    "circleci": ("CIRCLE_TOKEN", lambda: f"CCIPAT_{r(AL, 22)}_{r(HX, 40)}"),
    "buildkite": ("BUILDKITE_API_TOKEN", lambda: "bkua_" + r(HX, 40)),
    "sonarqube": ("SONAR_TOKEN", lambda: "sqp_" + r(HX, 40)),
    "jfrog": ("ARTIFACTORY_API_KEY", lambda: "AKCp" + r(AL, 69)),
    "alibaba": ("ALIBABA_CLOUD_ACCESS_KEY_ID", lambda: "LTAI" + r(AL, 20)),
    "flutterwave": ("FLW_SECRET_KEY", lambda: f"FLWSECK-{r('abcdefgh0123456789', 32)}-X"),
    "easypost": ("EASYPOST_API_KEY", lambda: "EZAK" + r(AL, 54)),
    "dynatrace": ("DT_API_TOKEN", lambda: f"dt0c01.{r(UP, 24)}.{r(UP, 64)}"),
    "netlify": ("NETLIFY_AUTH_TOKEN", lambda: "nfp_" + r(AL, 36)),
    "openshift": ("OC_TOKEN", lambda: "sha256~" + r(URL, 43)),
    "plaid": ("PLAID_ACCESS_TOKEN", lambda: "access-production-" + uuid()),
    "brevo": ("BREVO_API_KEY", lambda: f"xkeysib-{r(HX, 64)}-{r(AL, 16)}"),
    "mailersend": ("MAILERSEND_API_KEY", lambda: "mlsn." + r(HX, 64)),
    "neon": ("NEON_API_KEY", lambda: "napi_" + r(LO, 64)),
    "vercel": ("VERCEL_TOKEN", lambda: "vcp_" + r(AL, 56)),
    "prefect": ("PREFECT_API_KEY", lambda: "pnu_" + r(AL, 36)),
    "shippo": ("SHIPPO_API_KEY", lambda: "shippo_live_" + r(HX, 40)),
    "typeform": ("TYPEFORM_TOKEN", lambda: "tfp_" + r(URL, 59)),
    "duffel": ("DUFFEL_ACCESS_TOKEN", lambda: "duffel_live_" + r(URL, 43)),
    "age": ("AGE_KEY", lambda: "AGE-SECRET-KEY-1" + r("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
    "pulumi": ("PULUMI_ACCESS_TOKEN", lambda: "pul-" + r(HX, 40)),
    "sourcegraph": ("SRC_ACCESS_TOKEN", lambda: "sgp_" + r(HX, 16) + "_" + r(HX, 40)),
    "tailscale": ("TS_AUTHKEY", lambda: f"tskey-auth-k{r(AL, 11)}CNTRL-{r(AL, 32)}"),
    "contentful": ("CONTENTFUL_MANAGEMENT_TOKEN", lambda: "CFPAT-" + r(URL, 43)),
    "octopus": ("OCTOPUS_API_KEY", lambda: "API-" + r(UP, 26)),
    "posthog": ("POSTHOG_PERSONAL_API_KEY", lambda: "phx_" + r(AL, 43)),
    "tencent": ("TENCENTCLOUD_SECRET_ID", lambda: "AKID" + r(AL, 32)),
    "woocommerce": ("WOOCOMMERCE_CONSUMER_SECRET", lambda: "cs_" + r(HX, 40)),
    "braintree": ("BRAINTREE_ACCESS_TOKEN", lambda: f"access_token$production${r(LO, 16)}${r(HX, 32)}"),
    "firebase-fcm": ("FCM_SERVER_KEY", lambda: f"AAAA{r(URL, 7)}:APA91b{r(URL, 134)}"),
    "airtable": ("AIRTABLE_API_KEY", lambda: f"pat{r(AL, 14)}.{r(HX, 64)}"),
    "clojars": ("CLOJARS_TOKEN", lambda: "CLOJARS_" + r(LO, 60)),
    "scalingo": ("SCALINGO_API_TOKEN", lambda: "tk-us-" + r(URL, 48)),
    "datadog": ("DATADOG_API_KEY", lambda: r(HX, 32)),
    "cloudflare": ("CLOUDFLARE_API_TOKEN", lambda: r(URL, 40)),
    "okta": ("OKTA_API_TOKEN", lambda: "00" + r(URL, 40)),
    "snyk": ("SNYK_TOKEN", uuid),
    "algolia": ("ALGOLIA_ADMIN_KEY", lambda: r(HX, 32)),
    "fastly": ("FASTLY_API_TOKEN", lambda: r(URL, 32)),
    "mistral": ("MISTRAL_API_KEY", lambda: r(AL, 32)),
    "cohere": ("COHERE_API_KEY", lambda: r(AL, 40)),
    "linode": ("LINODE_TOKEN", lambda: r(HX, 64)),
    "hetzner": ("HCLOUD_TOKEN", lambda: r(AL, 64)),
    "zendesk": ("ZENDESK_API_TOKEN", lambda: r(AL, 40)),
    "twitch": ("TWITCH_CLIENT_SECRET", lambda: r(LO, 30)),
    "wandb": ("WANDB_API_KEY", lambda: r(HX, 40)),
    "password": ("DB_PASSWORD", lambda: R.choice([r(AL, 16), r(AL + "!@#%^&*-_", 20), "-".join(r(string.ascii_lowercase, 5) for _ in range(4)) + str(R.randint(10, 99))])),
    "secret-key": ("SECRET_KEY", lambda: r(AL + "!@#%^&*(-_=+)", 50)),
    "generic-api-key": ("API_KEY", lambda: r(AL, 32)),
    "client-secret": ("CLIENT_SECRET", lambda: r(URL, 40)),
}

# Contexts: how a value and its variable name appear in output.
def contexts(name, v):
    low = name.lower()
    return [
        f"export {name}={v}",
        f"{name}=\"{v}\"",
        f"  {low}: {v}",
        f"  \"{low}\": \"{v}\",",
        f"{low} = \"{v}\"",
        f"client = Client({low}='{v}')",
        f"docker run -e {name}={v} app:latest",
        f"2026-11-30T10:12:03Z DEBUG loaded {name}={v} from env",
        f"      - name: {name}<NL>        value: \"{v}\"",
        f"os.environ[\"{name}\"] = \"{v}\"",
        f"$env:{name} = \"{v}\"",
        f"set {name}={v}",
    ]


def prefixed_contexts(v):
    return [
        v,
        f"token: {v}",
        f"curl -H \"Authorization: Bearer {v}\" https://api.example.com/v1/me",
        f"Error: request failed with credentials {v} (401)",
        f"[auth]<NL>token = {v}<NL>",
    ]


rows = []


def add(cls, kind, text, secret):
    assert secret in text.replace("<NL>", "\n"), (kind, text)
    rows.append((cls, kind, text.replace("\n", "<NL>"), secret))


for cls, table, per in (("common", COMMON, 9), ("other", OTHER, 4)):
    for kind, (name, gen) in table.items():
        ctxs = list(range(len(contexts("X", "v"))))
        R.shuffle(ctxs)
        for i in range(per):
            v = gen()
            add(cls, kind, contexts(name, v)[ctxs[i % len(ctxs)]], v)
        # Values with a provider prefix are found without their variable.
        if not (kind in ("aws-secret-access-key", "azure-storage-key") or name in (
                "DATADOG_API_KEY", "CLOUDFLARE_API_TOKEN", "OKTA_API_TOKEN", "SNYK_TOKEN",
                "ALGOLIA_ADMIN_KEY", "FASTLY_API_TOKEN", "MISTRAL_API_KEY", "COHERE_API_KEY",
                "LINODE_TOKEN", "HCLOUD_TOKEN", "ZENDESK_API_TOKEN", "TWITCH_CLIENT_SECRET",
                "WANDB_API_KEY", "DB_PASSWORD", "SECRET_KEY", "API_KEY", "CLIENT_SECRET")):
            v = gen()
            add(cls, kind, R.choice(prefixed_contexts(v)), v)

# Private keys, connection strings, headers and command lines.
for kind in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY",
             "ENCRYPTED PRIVATE KEY", "DSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]:
    for ctx in range(3):
        k, first = pem(kind)
        if ctx == 0:
            add("common", "private-key", k, first)
        elif ctx == 1:
            add("common", "private-key", "$ cat ~/.ssh/id_key<NL>" + k, first)
        else:
            esc = k.replace("\n", "\\n")
            add("common", "private-key", f"  \"private_key\": \"{esc}\\n\",", first)
for _ in range(8):
    pw = r(AL, R.randint(10, 20))
    user = R.choice(["app", "admin", "postgres", "svc_reader", "deploy"])
    host = R.choice(["db.internal", "10.0.3.7", "pg.prod.example.com", "mysql", "mongo-0.mongo"])
    scheme = R.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp"])
    add("common", "connection-url", R.choice([
        f"DATABASE_URL={scheme}://{user}:{pw}@{host}:5432/app",
        f"  url: \"{scheme}://{user}:{pw}@{host}/app?sslmode=require\"",
        f"connecting to {scheme}://{user}:{pw}@{host}/ ...",
    ]), pw)
for _ in range(8):
    user, pw = R.choice(["alice", "ci", "deploy"]), r(AL + "-_.", R.randint(12, 20))
    basic = base64.b64encode(f"{user}:{pw}".encode()).decode()
    add("other", "basic-auth", R.choice([
        f"curl -H 'Authorization: Basic {basic}' https://ci.example.com/api",
        f"Authorization: Basic {basic}",
        f"  headers: {{\"Authorization\": \"Basic {basic}\"}}",
    ]), basic)
    pw2 = r(AL + "-_.", R.randint(12, 20))
    add("other", "cli-credential", R.choice([
        f"curl -u {user}:{pw2} https://ci.example.com/job/build",
        f"curl --user {user}:{pw2} -X POST https://ci.example.com/",
        f"mysql -h db -u{user} -p{pw2} app",
        f"mysqladmin --user={user} --password={pw2} status",
        f"sshpass -p {pw2} ssh {user}@host",
    ]), pw2)
    pw3 = r(AL, R.randint(12, 24))
    add("other", "url-userinfo", R.choice([
        f"git clone https://{user}:{pw3}@git.example.com/team/repo.git",
        f"pip install --index-url https://{user}:{pw3}@pypi.corp.example/simple pkg",
        f"fetching https://{user}:{pw3}@artifacts.example.com/releases/app.tgz",
    ]), pw3)
    tok = r(AL, 40)
    add("other", "bearer-header", R.choice([
        f"Authorization: Bearer {tok}",
        f"> authorization: bearer {tok}",
        f"requests.get(url, headers={{\"Authorization\": \"Bearer {tok}\"}})",
        f"X-API-Key: {tok}",
    ]), tok)
for _ in range(6):
    pw = r(AL, 16)
    add("other", "netrc", f"machine api.example.com login ci password {pw}", pw)
    y = base64.b64encode(r(AL, 24).encode()).decode()
    add("other", "kubernetes-secret", f"apiVersion: v1<NL>kind: Secret<NL>metadata:<NL>  name: db<NL>type: Opaque<NL>data:<NL>  password: {y}<NL>", y)
    a = base64.b64encode(f"ci:{r(AL, 20)}".encode()).decode()
    add("other", "docker-config", f"{{\"auths\": {{\"registry.example.com\": {{\"auth\": \"{a}\"}}}}}}", a)

# Configuration files and tools' own spellings of a credential.
for _ in range(5):
    pw = r(AL + "!#%-_", R.randint(12, 20)).replace("'", "")
    add("other", "xml", R.choice([
        f"<server><id>corp</id><username>ci</username><password>{pw}</password></server>",
        f"    <add key=\"ClearTextPassword\" value=\"{pw}\" />",
        f"<apiKey>{pw}</apiKey>",
    ]), pw)
    add("other", "php", R.choice([
        f"define('DB_PASSWORD', '{pw}');",
        f"$config['db_password'] = '{pw}';",
        f"'password' => '{pw}',",
    ]), pw)
    add("other", "connection-string", R.choice([
        f"Server=tcp:app.database.windows.net,1433;Database=app;User ID=app;Password={pw};Encrypt=True;",
        f"jdbc:mysql://db:3306/app?user=app&password={pw}&useSSL=true",
        f"Host=db;Username=app;Pwd={pw};Database=app",
    ]), pw)
    add("other", "ansible", R.choice([
        f"ansible_become_pass: {pw}",
        f"ansible_ssh_pass={pw}",
        f"smtp_pass = \"{pw}\"",
    ]), pw)
    tok = r(AL, 24)
    add("other", "cookie", R.choice([
        f"Cookie: lang=en; sessionid={tok}",
        f"< set-cookie: auth_token={tok}; Path=/; HttpOnly; Secure",
        f"Set-Cookie: connect.sid=s%3A{tok}.{r(URL, 30)}; Path=/",
    ]), tok)
    add("other", "cli-credential", R.choice([
        f"docker login -u ci -p {pw} registry.example.com",
        f"openssl pkcs12 -export -in c.pem -out c.p12 -passout pass:{pw}",
        f"redis-cli -h cache -a {pw} ping",
    ]), pw)
    sig = r(HX, 64)
    add("other", "presigned-url", f"https://bucket.s3.amazonaws.com/report.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261130T101010Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}", sig)
    h = r(HX, 64)
    add("other", "private-key-hex", R.choice([
        f"PRIVATE_KEY=0x{h}",
        f"  \"signing_key\": \"{h}\",",
        f"WALLET_PRIVATE_KEY=\"{h}\"",
    ]), h)
    hsh = "$6$" + r(AL, 8) + "$" + r(AL + "./", 86)
    add("other", "password-hash", f"deploy:{hsh}:19700:0:99999:7:::", hsh)
    sk = r(AL, 24)
    st = "IQoJb3JpZ2luX2VjE" + r(B64, 280)
    add("other", "aws-sts-json", f"    \"SessionToken\": \"{st}\",", st)
    y = base64.b64encode(r(AL, 20).encode()).decode()
    add("other", "kubernetes-secret", f"apiVersion: v1<NL>data:<NL>  api-token: {y}<NL>kind: Secret<NL>metadata:<NL>  name: api", y)

# Benign look-alikes: what a credential scanner must leave alone.
PLACEHOLDERS = ["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "ghp_" + "x" * 36, "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "glpat-xxxxxxxxxxxxxxxxxxxx",
                "sk-..." , "sk-proj-****", "xoxb-000000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx",
                "sk_live_" + "*" * 24, "sk_test_XXXXXXXXXXXXXXXXXXXXXXXX", "hf_" + "x" * 34,
                "npm_" + "0" * 36, "<your-api-key>", "<TOKEN>", "${API_KEY}", "$API_KEY", "%API_KEY%",
                "{{ secrets.API_KEY }}", "{{ .Values.apiKey }}", "[PASSWORD]", "********", "changeme",
                "your-token-here", "REPLACE_ME", "xxxxxxxxxxxxxxxx", "...", "<redacted>", "TODO",
                "$(cat /run/secrets/token)", "`cat token.txt`", "os.environ['API_KEY']",
                "process.env.API_KEY", "getenv(\"API_KEY\")", "None", "null", "\"\"", "secretKeyRef",
                "AKIA****************", "dckr_pat_xxxxxxxxxxxxxxxxxxxxxxxxxxx"]
NAMES = ["API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "OPENAI_API_KEY",
         "SLACK_TOKEN", "STRIPE_SECRET_KEY", "password", "client_secret", "token"]
benign = set()
for p in PLACEHOLDERS:
    for _ in range(4):
        name = R.choice(NAMES)
        ctx = R.choice([f"export {name}={p}", f"{name}: {p}", f"\"{name.lower()}\": \"{p}\"",
                        f"{name.lower()} = {p}", f"# set {name} to {p} before running"])
        benign.add(("placeholder", ctx))
CODE = [
    "password = request.form['password']",
    "if not api_key:<NL>    raise RuntimeError('API_KEY is not set')",
    "api_key: str = Field(..., description='The provider API key')",
    "token = generate_token(user_id, expires_in=3600)",
    "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())",
    "PASSWORD_MIN_LENGTH = 12",
    "secret = vault.read(\"secret/data/app\")['data']",
    "let token = std::env::var(\"GITHUB_TOKEN\")?;",
    "const apiKey = process.env.OPENAI_API_KEY ?? '';",
    "func (c *Client) SetToken(token string) { c.token = token }",
    "self.api_key = api_key or os.getenv('ANTHROPIC_API_KEY')",
    "password: !vault |",
    "valueFrom:<NL>  secretKeyRef:<NL>    name: db-credentials<NL>    key: password",
    "AUTH_TOKEN_TTL_SECONDS=900",
    "TOKEN_URL=https://oauth2.example.com/token",
    "secret_name = f\"{env}-db-password\"",
    "def check_password(candidate: str, stored_hash: str) -> bool:",
    "tokens = tokenizer.encode(text, max_length=512)",
    "max_tokens=1024, temperature=0.2",
    "keyring.get_password('service', user)",
    "echo \"$DOCKER_PASSWORD\" | docker login -u \"$DOCKER_USER\" --password-stdin",
    "curl -u \"$USER:$TOKEN\" https://api.example.com",
    "mysql -u root -p",
    "ssh -p 2222 deploy@host",
    "psql \"host=db user=app password=$PGPASSWORD dbname=app\"",
    "git config --global credential.helper store",
    "aws configure set aws_access_key_id $AWS_ACCESS_KEY_ID",
    "kubectl create secret generic db --from-literal=password=\"$DB_PASSWORD\"",
    "gh auth login --with-token < token.txt",
    "Authorization: Bearer <token>",
    "Authorization: Bearer ${TOKEN}",
    "-H \"Authorization: token $GITHUB_TOKEN\"",
    "tokenizer_config.json: 100%|██████████| 1.2k/1.2k [00:00<00:00]",
    "Token usage: prompt_tokens=812 completion_tokens=96 total_tokens=908",
    "WARNING: the secret key is shorter than recommended",
    "Your password has been changed successfully.",
    "Enter passphrase for key '/home/dev/.ssh/id_ed25519':",
    "password-reset-email.html",
    "secret-santa-2026.xlsx",
    "from sklearn.model_selection import train_test_split  # sk-learn",
    "keyboard-layout: us",
    "session_key_prefix = 'sess:'",
    "api_key_header_name = 'X-API-Key'",
    "passwd: files systemd",
    "private_key_path = ~/.ssh/id_ed25519",
    "the private key never leaves the HSM",
    "-----BEGIN CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----",
    "export AWS_PROFILE=dev",
    "export AWS_REGION=eu-west-1",
    "redis://localhost:6379/0",
    "postgres://app@db.internal:5432/app",
    "postgresql://localhost/test",
    "https://user@github.com/org/repo.git",
    "git@github.com:org/repo.git",
    "http://127.0.0.1:8080/healthz",
    "Listening on http://0.0.0.0:3000",
]
CODE += [
    "<password>${env.REPO_PASSWORD}</password>",
    "<passwordPolicy>strict</passwordPolicy>",
    "<token></token>",
    "Cookie: theme=dark; lang=en-GB",
    "set-cookie: sessionid=; Max-Age=0; Path=/",
    "define('DB_PASSWORD', getenv('DB_PASSWORD'));",
    "'password' => env('DB_PASSWORD'),",
    "Server=tcp:app.database.windows.net,1433;Database=app;Authentication=Active Directory Default;",
    "ansible_become_pass: \"{{ vault_become_pass }}\"",
    "docker login -u ci --password-stdin registry.example.com",
    "openssl pkcs12 -export -in c.pem -out c.p12 -passout env:P12_PASS",
    "redis-cli -h cache ping",
    "PUBLIC_KEY=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq7",
    "sort_key = created_at_then_updated_at",
    "cache_key = \"users:list:page:1:size:50\"",
    "password_file: /run/secrets/db_password",
    "ssl_key_path = /etc/ssl/private/server.key",
    "TOKEN_ENDPOINT=https://login.example.com/oauth2/v2.0/token",
    "root:*:19700:0:99999:7:::",
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
]
for c in CODE:
    benign.add(("code", c))
for i in range(60):
    h = r(HX, 64)
    benign.add(("hash", R.choice([
        f"commit {h[:40]}",
        f"sha256:{h}",
        f"checksum = \"{h}\"",
        f"digest: sha256:{h}",
        f"Merge: {h[:7]} {h[7:14]}",
        f"request_id={uuid()}",
        f"trace_id={h[:32]} span_id={h[32:48]}",
        f"integrity sha512-{base64.b64encode(R.randbytes(64)).decode()}",
        f"pod/web-{h[:10]}-{r(LO, 5)} Running",
        f"etag: \"{h[:32]}\"",
        f"{h[:32]}  dist/app-1.4.2.tar.gz",
        f"uuid = \"{uuid()}\"",
    ])))
for i in range(12):
    key = base64.b64encode(R.randbytes(51)).decode()
    benign.add(("public-key", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{key[:43]} dev@laptop"))
    benign.add(("public-key", f"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQ{base64.b64encode(R.randbytes(90)).decode()} ci@build"))
for i in range(20):
    benign.add(("log", R.choice([
        f"2026-11-30 10:{i:02d}:07 INFO token refreshed for user {R.randint(1000, 9999)}, expires in 3600s",
        f"2026-11-30 10:{i:02d}:09 WARN invalid token for session {uuid()}",
        f"GET /api/v1/tokens/{R.randint(1, 999)} 404 {R.randint(1, 90)}ms",
        f"password policy: min length {R.randint(8, 16)}, require digits",
        f"Secret {R.choice(['db', 'tls', 'registry'])}-credentials created",
        f"Rotated {R.randint(2, 9)} API keys; next rotation in 30 days",
        f"{R.randint(1, 99)} passed, 0 failed (test_password_reset, test_token_expiry)",
    ])))
for i in range(20):
    w = R.choice(["task", "disk", "mask", "risk", "desk", "ask"])
    benign.add(("identifier", R.choice([
        f"{w}_{r(string.ascii_lowercase, 6)}_{r(string.ascii_lowercase, 5)} = {R.randint(0, 100)}",
        f"fn test_{r(string.ascii_lowercase, 8)}_{r(string.ascii_lowercase, 6)}() {{",
        f"class {r(string.ascii_uppercase, 1)}{r(string.ascii_lowercase, 7)}TokenProvider:",
        f"api-version=2024-0{R.randint(1, 9)}-01",
        f"image: registry.example.com/team/app:{r(HX, 12)}",
        f"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA{base64.b64encode(R.randbytes(48)).decode()}",
    ])))

for kind, text in sorted(benign):
    rows.append(("benign", kind, text, ""))

print("# Generated by tests/corpus/make_secrets.py (fixed seed); see its docstring.")
print("# CLASS\tKIND\tTEXT\tSECRET")
for cls, kind, text, secret in rows:
    assert "\t" not in text and "\t" not in secret
    print(f"{cls}\t{kind}\t{text}" + (f"\t{secret}" if cls != "benign" else ""))
