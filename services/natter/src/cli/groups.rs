//! `natter groups` and `natter group …`: thin wrappers of the `group` frames.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use protocol::frames::{ClientFrame, ServerFrame};
use protocol::{GroupInfo, GroupOp, Role};

use super::{Login, new_id, print_json};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub login: Login,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group with you as its owner; prints its id.
    Create {
        #[command(flatten)]
        login: Login,
        name: String,
        /// Members besides you, comma separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add users (owner and admins).
    Add {
        #[command(flatten)]
        login: Login,
        group: String,
        #[arg(value_delimiter = ',', required = true)]
        users: Vec<String>,
        /// Add them as admins (owner only).
        #[arg(long)]
        admin: bool,
    },
    /// Remove users (owner and admins).
    Remove {
        #[command(flatten)]
        login: Login,
        group: String,
        #[arg(value_delimiter = ',', required = true)]
        users: Vec<String>,
    },
    /// Rename the group (owner and admins).
    Rename {
        #[command(flatten)]
        login: Login,
        group: String,
        name: String,
    },
    /// Change a member's role (owner only; `owner` hands the group over).
    SetRole {
        #[command(flatten)]
        login: Login,
        group: String,
        member: String,
        role: RoleArg,
    },
    /// A page of members, by user id.
    Members {
        #[command(flatten)]
        login: Login,
        group: String,
        /// Start after this user id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The group's details.
    Info {
        #[command(flatten)]
        login: Login,
        group: String,
    },
    /// Leave the group.
    Leave {
        #[command(flatten)]
        login: Login,
        group: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Member,
    Admin,
    Owner,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Member => Role::Member,
            RoleArg::Admin => Role::Admin,
            RoleArg::Owner => Role::Owner,
        }
    }
}

/// `natter groups`: the user's groups, every page of them.
pub async fn mine(args: GroupsArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let mut session = args.login.connect(config).await?;
    let mut groups: Vec<GroupInfo> = Vec::new();
    loop {
        let qid = new_id();
        let op = GroupOp::Mine {
            after: groups.last().map(|g| g.group.to_string()),
            limit: None,
        };
        let frame = ClientFrame::Group {
            qid: qid.clone(),
            op,
        };
        let ServerFrame::Groups {
            groups: page, more, ..
        } = session.query(&qid, frame).await?
        else {
            bail!("unexpected answer to group mine");
        };
        let done = !more || page.is_empty();
        groups.extend(page);
        if done {
            break;
        }
    }
    session.close().await;
    if json {
        return print_json(&groups);
    }
    for g in &groups {
        print_group(g);
    }
    Ok(())
}

pub async fn run(cmd: GroupCmd, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let created = matches!(cmd, GroupCmd::Create { .. });
    let (login, op) = match cmd {
        GroupCmd::Create {
            login,
            name,
            members,
        } => (login, GroupOp::Create { name, members }),
        GroupCmd::Add {
            login,
            group,
            users,
            admin,
        } => {
            let role = admin.then_some(Role::Admin);
            (login, GroupOp::Add { group, users, role })
        }
        GroupCmd::Remove {
            login,
            group,
            users,
        } => (login, GroupOp::Remove { group, users }),
        GroupCmd::Rename { login, group, name } => (login, GroupOp::Rename { group, name }),
        GroupCmd::SetRole {
            login,
            group,
            member,
            role,
        } => {
            let role = role.into();
            (
                login,
                GroupOp::SetRole {
                    group,
                    member,
                    role,
                },
            )
        }
        GroupCmd::Members {
            login,
            group,
            after,
            limit,
        } => (
            login,
            GroupOp::Members {
                group,
                after,
                limit,
            },
        ),
        GroupCmd::Info { login, group } => (login, GroupOp::Info { group }),
        GroupCmd::Leave { login, group } => (login, GroupOp::Leave { group }),
    };
    match ask(&login, op, config).await? {
        ServerFrame::Group { group, .. } if json => print_json(&group),
        ServerFrame::Group { group, .. } if created => {
            println!("{}", group.group);
            eprintln!("created {} ({} members)", group.name, group.members);
            Ok(())
        }
        ServerFrame::Group { group, .. } => {
            print_group(&group);
            Ok(())
        }
        ServerFrame::GroupMembers { members, more, .. } => {
            if json {
                return print_json(&serde_json::json!({ "members": members, "more": more }));
            }
            for m in &members {
                println!("{} {}", m.user, role_name(Some(m.role)));
            }
            if more && let Some(last) = members.last() {
                eprintln!("(more: --after {})", last.user);
            }
            Ok(())
        }
        other => bail!("unexpected answer to a group operation: {other:?}"),
    }
}

async fn ask(login: &Login, op: GroupOp, config: &NatterConfig) -> anyhow::Result<ServerFrame> {
    let mut session = login.connect(config).await?;
    let qid = new_id();
    let frame = ClientFrame::Group {
        qid: qid.clone(),
        op,
    };
    let answer = session.query(&qid, frame).await?;
    session.close().await;
    Ok(answer)
}

fn print_group(g: &GroupInfo) {
    println!(
        "{}  {}  {} members  {}",
        g.group,
        g.name,
        g.members,
        role_name(g.role)
    );
}

fn role_name(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Owner) => "owner",
        Some(Role::Admin) => "admin",
        Some(Role::Member) => "member",
        None => "not a member",
    }
}
