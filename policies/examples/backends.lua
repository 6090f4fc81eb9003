-- Route groups to certificate authorities: laptops and servers get their
-- certificates from the corporate CA through SCEP (backend "scep-corp"),
-- so that they chain to the enterprise root; lab and CI machines use the
-- gateway's built-in CA ("local"). fleetgated.conf defines both backends
-- (see docs/scep.md for scep-corp's settings).

local DOMAIN = "corp.example"

local routes = {
  laptops = { backend = "scep-corp", profile = "default", validity = fleet.days(365) },
  servers = { backend = "scep-corp", profile = "server",  validity = fleet.days(365) },
  lab     = { backend = "local",     profile = "default", validity = fleet.days(30) },
  ci      = { backend = "local",     profile = "default", validity = fleet.hours(12) },
}

function enroll(req)
  if req.new_device and req.token == nil then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local group = req.device.group or ""
  local route = routes[group]
  if route == nil then
    return deny("group '" .. group .. "' is routed to no CA; ask the operator to add it to the policy")
  end
  local host = string.lower(req.facts.hostname or "")
  if not string.match(host, "^[a-z0-9][a-z0-9-]*$") then
    return deny("the device reported no usable hostname")
  end
  local name = host
  if route.backend == "scep-corp" then
    name = host .. "." .. DOMAIN    -- the corporate CA only signs names in its domain
  end
  return allow{
    backend = route.backend,
    profile = route.profile,
    cn = name,
    dns = { name },
    validity = route.validity,
  }
end
