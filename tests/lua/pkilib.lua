-- Test certificates for the TLS, HTTPS and WSS tests, minted once per run with
-- `openssl req` into a temporary directory (removed at exit where possible).
local M = {}

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.slurp = slurp

-- openssl present?
function M.available()
  return sh("command -v openssl >/dev/null 2>&1")
end

-- A CA, a leaf for localhost/127.0.0.1 signed by it, a second (unknown) CA with its
-- own localhost leaf, and a client certificate. Minted once per run.
local PKI
function M.pki()
  if PKI then return PKI end
  local dir = os.tmpname()
  os.remove(dir)
  assert(sh("mkdir -p " .. dir))
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local script = table.concat({
    "cd " .. dir,
    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > leaf.ext",
    "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client.ext",
    "openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 2 -subj '/CN=skysocket test CA'",
    "openssl req " .. ec .. " -keyout server.key -out server.csr -subj '/CN=localhost/O=skysocket'",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out server.pem",
    "openssl req -x509 " .. ec .. " -keyout other.key -out other.pem -days 2 -subj '/CN=other CA'",
    "openssl req " .. ec .. " -keyout rogue.key -out rogue.csr -subj '/CN=localhost'",
    "openssl x509 -req -in rogue.csr -CA other.pem -CAkey other.key -CAcreateserial -days 2 -extfile leaf.ext -out rogue.pem",
    -- Expired: valid until yesterday (-days -1 puts notAfter before notBefore).
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days -1 -extfile leaf.ext -out expired.pem",
    "cp server.key expired.key",
    "openssl req " .. ec .. " -keyout client.key -out client.csr -subj '/CN=client one'",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem",
    -- Leaves for other host names (SNI): a.test, and *.wild.test.
    "printf 'subjectAltName=DNS:a.test\\nbasicConstraints=CA:FALSE\\n' > a.ext",
    "openssl req " .. ec .. " -keyout a.key -out a.csr -subj '/CN=a.test'",
    "openssl x509 -req -in a.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile a.ext -out a.pem",
    "printf 'subjectAltName=DNS:*.wild.test\\nbasicConstraints=CA:FALSE\\n' > wild.ext",
    "openssl req " .. ec .. " -keyout wild.key -out wild.csr -subj '/CN=wild'",
    "openssl x509 -req -in wild.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile wild.ext -out wild.pem",
  }, " && ")
  assert(sh("(" .. script .. ") >" .. dir .. "/mint.log 2>&1"), "openssl could not mint certificates: " .. tostring(slurp(dir .. "/mint.log")))
  PKI = { dir = dir }
  for _, n in ipairs { "ca", "server", "other", "rogue", "client", "expired", "a", "wild" } do
    PKI[n] = dir .. "/" .. n .. ".pem"
    PKI[n .. "_key"] = dir .. "/" .. n .. ".key"
  end
  return PKI
end


return M
