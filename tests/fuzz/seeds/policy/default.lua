-- fleetgate default enrollment policy.
--
-- A device holding a valid enrollment token gets a client-authentication
-- certificate named after its hostname; an enrolled device may renew it.
-- An EST device (req.protocol == "est") reports no facts: its CSR's
-- common name stands for the hostname.
-- Everything else is denied. Copy this file and edit it to suit your fleet;
-- docs/policy.md describes req, allow{} and deny().

local function hostname_of(req)
  local h = req.facts.hostname
  if req.protocol == "est" then
    h = req.csr.cn
  end
  if h == nil or h == "" then
    return nil
  end
  return string.lower(h)
end

function enroll(req)
  if not req.renew and req.token == nil and req.new_device then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local name = hostname_of(req)
  if name == nil then
    if req.protocol == "est" then
      return deny("the CSR has no subject common name; put the device's DNS name in CN")
    end
    return deny("the device reported no hostname")
  end
  if not name:match("^[a-z0-9][a-z0-9.-]*$") or #name > 253 then
    return deny("hostname '" .. name .. "' is not a valid DNS name")
  end
  return allow{
    profile = req.profile or "default",   -- an EST label's profile, else "default"
    cn = name,
    dns = { name },
    validity = fleet.days(30),
  }
end

function checkin(dev)
  return {}
end
