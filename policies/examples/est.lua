-- Network gear enrolling over EST next to agents over ZeroMQ.
--
-- fleetgated.conf must define the profiles named here:
--   default  client certificates for agents (30 days)
--   network  certificates for routers and switches (1 year), reached
--            through est.labels = { network = "network" }
-- EST devices report no facts: the CSR's common name names them, and only
-- tokens of the "network" group may enroll over EST. A re-enrollment
-- (simplereenroll) keeps the name: the front-end has already checked that
-- the CSR names the subject of the client certificate (RFC 7030 4.2.2).

local function dns_name(s)
  s = string.lower(s or "")
  if #s == 0 or #s > 253 or not string.match(s, "^[a-z0-9][a-z0-9.-]*$") then
    return nil
  end
  return s
end

function enroll(req)
  if req.protocol == "est" then
    if req.device.group ~= "network" then
      return deny("EST enrollment is for the network group; ask the operator for a network token")
    end
    local name = dns_name(req.csr.cn)
    if name == nil then
      return deny("the CSR's CN must be the device's DNS name")
    end
    return allow{ profile = req.profile or "network", cn = name, dns = { name },
                  validity = fleet.days(365) }
  end
  if req.new_device and req.token == nil then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local name = dns_name(req.facts.hostname)
  if name == nil then
    return deny("the device reported no usable hostname")
  end
  return allow{ profile = "default", cn = name, dns = { name }, validity = fleet.days(30) }
end
